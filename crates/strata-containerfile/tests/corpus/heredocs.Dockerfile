# syntax=docker/dockerfile:1
FROM debian:bookworm-slim AS base

RUN <<EOF
set -eux
apt-get update
apt-get install -y --no-install-recommends ca-certificates curl python3
rm -rf /var/lib/apt/lists/*
EOF

RUN <<-'SCRIPT' bash
	set -e
	echo "home is $HOME (not expanded by the builder)"
	SCRIPT

RUN python3 <<PY
import os
print("hello from", os.uname().sysname)
PY

RUN <<FIRST cat - /dev/stdin > /greeting <<SECOND
hello
FIRST
world
SECOND

COPY <<EOF /etc/app/config.ini
[server]
port = ${PORT:-8080}
EOF

COPY --chmod=0755 <<"RUNME" <<RUNME2 /usr/local/bin/
#!/bin/sh
echo "$@"
RUNME
#!/bin/sh
exec /usr/local/bin/RUNME "$@"
RUNME2

ADD <<EOF /etc/motd
welcome
EOF

FROM base
ONBUILD RUN <<EOF
echo building a child image
EOF
CMD ["cat", "/greeting"]
