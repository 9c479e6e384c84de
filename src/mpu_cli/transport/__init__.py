"""The file transport: the server and the client as separate processes exchanging only files.

exchange.py  the exchange-folder format, writer and validating reader (shared; imports neither side)
server_cli   `mpu-server init|publish|aggregate|status` (imports mpu/, never unlearn/ or data/)
client_cli   `mpu-client unlearn` (imports unlearn/ and data/, never mpu/)
local.py     `mpu-run transport=files`: runs the rounds through those processes
"""
