# syntax=docker/dockerfile:1
# One image for the API (`npm run api`, the default) and the worker (`npm run worker`).
# TypeScript runs through tsx in production too: there is no compile step to drift from what the tests run.

FROM node:20-bookworm-slim AS base
# git and CA certificates for the coding-agent runtimes the worker starts in session workspaces; bubblewrap and socat
# for each session's sandbox and its bridges to the worker.
RUN apt-get update \
  && apt-get install -y --no-install-recommends ca-certificates git bubblewrap socat \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app

FROM base AS deps
COPY package.json package-lock.json ./
# tsx is a runtime dependency; dev tools (vitest, drizzle-kit, eslint) stay out of the image.
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# The build context may carry a host node_modules (built for another platform) and local state: strip them here,
# so the image only ever gets the node_modules that `npm ci` installed above.
FROM base AS source
COPY . /src
RUN rm -rf /src/node_modules /src/.data /src/.git /src/test-artifacts /src/.ci

FROM base AS runtime
ENV NODE_ENV=production \
    PORT=8080 \
    AGENTPLANE_DATA_DIR=/app/.data
COPY --from=deps --chown=node:node /app/node_modules ./node_modules
COPY --from=source --chown=node:node /src/ ./
RUN mkdir -p /app/.data && chown node:node /app/.data
USER node
EXPOSE 8080
# node itself, not npm run: npm (and tsx's own launcher) would keep a copy of the environment the API clears its
# secrets from (config/env.ts)
CMD ["node", "--import", "tsx", "api/main.ts"]
