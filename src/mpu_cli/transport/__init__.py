"""The file transport: the server and the client as separate processes exchanging only files.

exchange.py  the exchange-folder format, writer and validating reader (shared; imports neither side).
server.py    the server party's commands (init / publish / aggregate / status; imports mpu/, never unlearn/ or
             data/), run as `mpu-server` (cli/server.py parses their options).
The client party is cli/client.py (`mpu-client`, imports unlearn/ and data/, never mpu/); run/processes.py drives
both for `mpu-run transport=files`; the server's private state is run/server_state.py's format.
"""
