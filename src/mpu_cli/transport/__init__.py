"""The file transport: the server and the client as separate processes exchanging only files.

exchange.py  the exchange-folder format, writer and validating reader (shared; imports neither side).
The parties are the commands cli/server.py (`mpu-server`, imports mpu/, never unlearn/ or data/) and
cli/client.py (`mpu-client`, imports unlearn/ and data/, never mpu/); run/processes.py drives them for
`mpu-run transport=files`; the server's private state is run/server_state.py's format.
"""
