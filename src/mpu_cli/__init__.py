"""mpu-cli: experiment runner for MPU, privacy-preserving LLM unlearning with multiple perturbed copies."""

__version__ = "0.1.0"
