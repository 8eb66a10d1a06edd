# syntax=docker/dockerfile:1.7
# The nodeshell image: one static binary (controller, gateway and the rest as subcommands)
# with the web console embedded, on distroless. `make image` builds it; this repository's
# CI does not (docs/setup.md).
#
#   make image            # docker build -t ghcr.io/periscope/nodeshell:<crate version> .
#   docker run --rm ghcr.io/periscope/nodeshell:0.1.0 --help
#
# Built without the `dev` cargo feature: no AWS simulator, no `nodeshell sim`/`dev`.

ARG NODE_VERSION=22
ARG RUST_VERSION=1.95

# --- web console: npm packages bundled by esbuild into web/dist ---------------------------
FROM node:${NODE_VERSION}-bookworm-slim AS web
WORKDIR /src/web
# The lock file alone first, so the npm layer survives edits of the console's sources.
COPY web/package.json web/package-lock.json ./
# playwright-core is only the browser test's driver; it must never fetch a browser.
ENV PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
RUN npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.package-lock.json
COPY web/ ./
RUN ./build.sh

# --- the binary: statically linked against musl -----------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS rust
# aws-lc-rs (the TLS and SigV4 crypto) compiles C: musl-gcc, cmake and clang.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools cmake clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
COPY --from=web /src/web/dist web/dist
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eux; \
    target="$(uname -m)-unknown-linux-musl"; \
    rustup target add "$target"; \
    CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
      cargo build --locked --release --no-default-features --target "$target" --bin nodeshell; \
    mkdir -p /out; \
    cp "target/$target/release/nodeshell" /out/nodeshell

# --- runtime: no shell, no package manager, uid 65532 --------------------------------------
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="nodeshell" \
      org.opencontainers.image.description="Audited node shells through AWS SSM Session Manager" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=rust /out/nodeshell /usr/local/bin/nodeshell
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/nodeshell"]
CMD ["--help"]
