# Builds Caddy with this module from the checked-out source:
#   docker build -f xcaddy.Dockerfile -t caddy-whatsapp-media .
# The xcaddy line is the README's, word for word (TestReadmeInstall checks
# it): the module is not published, so it is built from the checkout ("=.",
# the build context), and the placeholder version keeps Go from asking a
# module proxy for it.
FROM caddy:2.11-builder AS builder
WORKDIR /src/caddy-whatsapp-media
COPY . .
RUN xcaddy build v2.11.9 --with github.com/avenping/caddy-whatsapp-media@v0.0.0-00010101000000-000000000000=.

FROM caddy:2.11
COPY --from=builder /src/caddy-whatsapp-media/caddy /usr/bin/caddy
