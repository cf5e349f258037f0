FROM node:22-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json prisma.config.ts ./
COPY prisma ./prisma
RUN npm ci --omit=dev --no-audit --no-fund
COPY bin ./bin
COPY src ./src
USER node
EXPOSE 3000
CMD ["node", "--import", "tsx", "src/main.ts"]
