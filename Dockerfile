# Build stage: compile the release binary.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY tests ./tests
COPY migrations ./migrations
COPY prices ./prices
RUN cargo build --release --bin tally

# Runtime stage: a small image, running as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/tally --create-home tally
COPY --from=build /src/target/release/tally /usr/local/bin/tally
USER tally
WORKDIR /var/lib/tally
ENV TALLY_ADDR=0.0.0.0:8080 TALLY_DATA_DIR=/var/lib/tally TALLY_LOG_FORMAT=json
EXPOSE 8080
CMD ["tally"]
