# retention-bot container image.
#
#   docker build -t retention-bot .
#   docker run -v /opt/compliancebot:/tmp/compliancebot -d --restart on-failure:5 --name=compliancebot -ti \
#     -p 8080:8080 -e WICKRIO_INGEST_ADDR=0.0.0.0:8080 -e WICKRIO_INGEST_TOKEN=... \
#     -e WICKRIO_BOT_NAME=compliancebot -e WICKRIO_BOT_PASSWORD=... retention-bot
#
# The same `docker run` line as the original's, plus the published HTTP source (docs/deployment.md).
# The bot starts as root only to hand its directories (often a root-owned volume) to the unprivileged
# user `bot` (WICKRIO_RUN_AS), then runs as that user.
# It is PID 1 itself: it handles SIGTERM (`docker stop`) and SIGINT, and starts no child processes.

# ---- build ---------------------------------------------------------------------------------------
FROM rust:1.93-slim-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --locked --profile dist \
    && install -D -m 0755 target/dist/retention-bot /out/retention-bot

# ---- runtime -------------------------------------------------------------------------------------
FROM debian:bookworm-slim
# CA certificates for TLS to AWS and the homeserver; nothing else is needed (the binary links only
# glibc: SQLite, for the Matrix store, is compiled in).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
    && groupadd --system --gid 10001 bot \
    && useradd --system --uid 10001 --gid bot --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin bot
COPY --from=builder /out/retention-bot /usr/local/bin/retention-bot
ENV WICKRIO_RUN_AS=10001:10001 \
    RETENTION_BOT_IMAGE=retention-bot
# The HTTP source (WICKRIO_INGEST_ADDR; loopback by default: set 0.0.0.0:8080 and a token to publish it).
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/retention-bot", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/retention-bot"]
CMD ["run"]
