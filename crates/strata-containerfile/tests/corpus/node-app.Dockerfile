# A realistic Node.js image with most instructions.
ARG NODE_VERSION=20

FROM node:${NODE_VERSION}-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json* ./
RUN --mount=type=cache,id=npm,target=/root/.npm,sharing=locked \
    --mount=type=secret,id=npmrc,target=/root/.npmrc \
    npm ci --omit=dev

FROM node:${NODE_VERSION}-bookworm-slim
MAINTAINER Example Team <team@example.com>
ARG NODE_VERSION
ENV NODE_ENV=production \
    PORT=3000 \
    APP_DIR="/srv/my app"
WORKDIR $APP_DIR
COPY --from=deps --link /app/node_modules ./node_modules
COPY --exclude=*.md --exclude=test/ . .
ADD --keep-git-dir=true https://github.com/example/assets.git#v1.2.0 /srv/assets
RUN set -eux; \
    groupadd --system app; \
    useradd --system --gid app --home-dir /srv app; \
    chown -R app:app /srv
USER app
EXPOSE ${PORT}
VOLUME /srv/data
HEALTHCHECK --interval=1m --timeout=5s --start-period=30s --start-interval=2s \
  CMD node healthcheck.js || exit 1
STOPSIGNAL SIGINT
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ONBUILD COPY . /srv/app-extra
ONBUILD RUN npm run build
ENTRYPOINT ["docker-entrypoint.sh"]
CMD node server.js
