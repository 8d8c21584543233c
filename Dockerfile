# The dynamic-lb sidecar (used by docker-compose.yml). Node 20; the CLI runs the TypeScript sources through tsx.
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY bin ./bin
COPY cmd ./cmd
COPY src ./src
COPY examples ./examples
COPY caddy-config ./caddy-config
USER node
EXPOSE 2020 2021 2053/udp 2053/tcp
ENTRYPOINT ["node", "bin/dynamic-lb.js"]
CMD ["serve", "--config", "/etc/dynamic-lb/dynamic-lb.yaml"]
