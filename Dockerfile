# Deputy's server. It runs the TypeScript sources through tsx (which reads tsconfig.json), and at start reads
# views/ (the people's pages and their stylesheet), policies/ (the Cedar schema and the default policy set) and
# prisma/migrations (applied at start), so all of them are in the image.
FROM node:22-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production

# Production dependencies exactly as package-lock.json pins them. Not `npm ci`: npm writes lock entries without
# a version for other platforms' optional packages when the registry is not registry.npmjs.org (npm/cli#9342),
# and `npm ci` then refuses the lock (see .ci/run); --no-save leaves it untouched. The postinstall script runs
# `prisma generate`, which reads prisma.config.ts and prisma/schema.prisma and writes src/generated/prisma.
COPY package.json package-lock.json prisma.config.ts ./
COPY prisma ./prisma
RUN npm install --omit=dev --no-save --no-audit --no-fund && npm cache clean --force

COPY tsconfig.json ./
COPY bin ./bin
COPY src ./src
COPY views ./views
COPY policies ./policies

# Deputy's data directory: audit archives, and the bootstrap admin's secret when DEPUTY_BOOTSTRAP_ADMIN_SECRET
# is not set (and the embedded database when DATABASE_URL is not). Mount a volume here to keep it.
ENV DEPUTY_DATA_DIR=/var/lib/deputy
RUN mkdir -p /var/lib/deputy && chown node:node /var/lib/deputy
USER node
EXPOSE 3000
CMD ["node", "--import", "tsx", "src/main.ts"]
