# charmflow's API and worker image. Temporal and Postgres run as their own services
# (docker-compose.yml), so the Temporal CLI is not built into the image.
FROM node:20-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 openssh-client tar ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/charmflow
ENV CHARMFLOW_SKIP_TEMPORAL_CLI=1 \
    CHARMFLOW_DATA_DIR=/var/lib/charmflow \
    NODE_ENV=production \
    NODE_OPTIONS=--max-semi-space-size=4 \
    MALLOC_ARENA_MAX=2
COPY package.json package-lock.json ./
COPY scripts ./scripts
RUN npm ci --omit=dev --no-audit --no-fund
COPY . .
RUN node scripts/build.js
RUN useradd --system --home /var/lib/charmflow charmflow && mkdir -p /var/lib/charmflow && chown charmflow /var/lib/charmflow
USER charmflow
ENTRYPOINT ["/usr/bin/tini", "--", "node", "bin/charmflow.js"]
CMD ["serve-api"]
