# Builds Caddy with this module from the checked-out source:
#   docker build -f xcaddy.Dockerfile -t caddy-whatsapp-media .
# Keep the xcaddy command in lockstep with the README's xcaddy build (the
# same Caddy version and --with argument); no Docker engine runs in this
# project's CI, so the README command is the one that is tested.
FROM caddy:2.11-builder AS builder
COPY . /src/caddy-whatsapp-media
RUN xcaddy build v2.11.9 \
	--with github.com/avenping/caddy-whatsapp-media=/src/caddy-whatsapp-media

FROM caddy:2.11
COPY --from=builder /usr/bin/caddy /usr/bin/caddy
