# One image for every threatmon service; the command picks which one runs:
#
#   docker build -t threatmon:local .
#   docker run --rm threatmon:local ingestor --help
#
# docker-compose.yml builds this image once and runs each service from it.

# --- recipe: only what decides the dependencies --------------------------------------------
# The workspace's manifests and lock file, each crate's sources replaced by empty stubs. The
# next stage copies this tree; while no manifest changes, its contents are the same and the
# dependency layer below is reused, however much the sources change.
FROM rust:1-bookworm AS recipe
WORKDIR /src
COPY . .
RUN set -eu; \
    mkdir -p /recipe; \
    cp Cargo.toml Cargo.lock /recipe/; \
    find . -mindepth 2 -path ./target -prune -o -name Cargo.toml -print | while read -r manifest; do \
        dir="$(dirname "$manifest")"; \
        mkdir -p "/recipe/$dir"; \
        cp "$manifest" "/recipe/$manifest"; \
        [ ! -f "$dir/build.rs" ] || cp "$dir/build.rs" "/recipe/$dir/build.rs"; \
        roots="$(grep -o 'path *= *"[^"]*\.rs"' "$manifest" | sed 's/.*"\(.*\)"/\1/' || true)"; \
        for root in src/lib.rs src/main.rs $(cd "$dir" && find src/bin -maxdepth 2 -name '*.rs' 2>/dev/null) $roots; do \
            if [ -f "$dir/$root" ]; then \
                mkdir -p "$(dirname "/recipe/$dir/$root")"; \
                printf '#![allow(dead_code)]\nfn main() {}\n' > "/recipe/$dir/$root"; \
            fi; \
        done; \
    done

# --- build ---------------------------------------------------------------------------------
# rust:1 is the newest stable Rust; the workspace needs 1.94 or later (rust-version).
FROM rust:1-bookworm AS builder
WORKDIR /src
# Dependencies first, from the recipe: rebuilt only when a manifest or Cargo.lock changes.
COPY --from=recipe /recipe/ ./
RUN cargo build --release --locked --bins
# Then the real sources. Touching them makes them newer than the stubs built above, so
# cargo rebuilds every workspace crate (and only those).
COPY . .
RUN find . -path ./target -prune -o -name '*.rs' -print | xargs -r touch \
    && cargo build --release --locked --bins

# --- runtime -------------------------------------------------------------------------------
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# An unprivileged user owning /data, where the SQLite database lives by default. A named
# volume mounted on /data starts out with this ownership.
RUN groupadd --system --gid 10001 threatmon \
    && useradd --system --uid 10001 --gid threatmon --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin threatmon \
    && mkdir -p /data \
    && chown threatmon:threatmon /data

COPY --from=builder \
    /src/target/release/ingestor \
    /src/target/release/alerter \
    /src/target/release/api \
    /src/target/release/threatctl \
    /usr/local/bin/

# Defaults that suit a container. No secret here: SECRET_KEY and the admin's password come
# from the environment at run time (see docker-compose.yml and .env.example).
ENV DATABASE_URL=sqlite:///data/threatmon.db \
    API_ADDR=0.0.0.0:8000

USER threatmon:threatmon
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000

# The compose file (or `docker run … <binary>`) picks the service: ingestor, alerter or api;
# threatctl, the operators' command-line tool, is there too.
CMD ["api", "--help"]
