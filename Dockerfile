# The dynamic-lb sidecar image: Node 20, the compiled CLI (dist/) and production dependencies only, run as the
# unprivileged `node` user. docker-compose.yml builds it; deploy/kubernetes runs it beside Caddy.
#   docker build -t caddy-dynamic-routing:0.1.0 .
#   docker run --rm -v "$PWD/dynamic-lb.yaml:/etc/dynamic-lb/dynamic-lb.yaml:ro" -p 2020:2020 -p 2021:2021 caddy-dynamic-routing:0.1.0
# test/deploy/image.test.ts starts the service from a scratch directory holding what the last stage copies.
ARG NODE_IMAGE=node:20-bookworm-slim

# 1. build: every dependency (TypeScript), then cmd/ + src/ → dist/
FROM ${NODE_IMAGE} AS build
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY cmd ./cmd
COPY src ./src
RUN npm run build

# 2. production dependencies only: no install scripts (none is needed at run time), and without the type
#    declarations and source maps (half of node_modules' size; node reads neither). The npm cache stays in this
#    stage: only node_modules is copied on.
FROM ${NODE_IMAGE} AS deps
WORKDIR /deps
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts \
 && find node_modules -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \) -delete

# 3. the image
FROM ${NODE_IMAGE}
ENV NODE_ENV=production \
    DYNAMIC_LB_HEALTHCHECK_URL=http://127.0.0.1:2021/readyz
WORKDIR /app
COPY --from=deps /deps/node_modules ./node_modules
COPY --from=build /build/dist ./dist
COPY package.json LICENSE ./
COPY bin ./bin
COPY examples ./examples
COPY caddy-config ./caddy-config
USER node
EXPOSE 2020 2021 2053/udp 2053/tcp
# ready = every listener serves and every source finished its first load; set DYNAMIC_LB_HEALTHCHECK_URL when
# admin.listen is not on port 2021
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.DYNAMIC_LB_HEALTHCHECK_URL).then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))"]
# exec form: node is PID 1 and receives SIGTERM (drain, exit 0) and SIGHUP (reload) itself, no shell between
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "bin/dynamic-lb.js"]
CMD ["serve", "--config", "/etc/dynamic-lb/dynamic-lb.yaml"]
