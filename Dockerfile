# Builds the single `killrvideo-users` binary; docker-compose.yml runs it as `migrate`
# and as `serve`. Migrations are compiled into the binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin killrvideo-users

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/killrvideo-users /usr/local/bin/killrvideo-users
ENV KILLRVIDEO_DATA_DIR=/var/lib/killrvideo-users
ENTRYPOINT ["killrvideo-users"]
CMD ["serve"]
