# syntax=docker/dockerfile:1
# The homelab-autopilot image: one Rust binary on a distroless base (glibc, libgcc, CA
# certificates, no shell, no package manager), running as the distroless `nonroot` user 65532.
#   docker build -t ghcr.io/homelab-autopilot/homelab-autopilot:0.1.0 .

FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the crate registry and the target directory between builds; the binary is
# copied out of the cache because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin homelab-autopilot \
 && install -D -m 0755 target/release/homelab-autopilot /out/homelab-autopilot

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="homelab-autopilot" \
      org.opencontainers.image.description="Kubernetes operator that keeps a homelab's Proxmox VE estate backed up, updated, restore-tested and replicated" \
      org.opencontainers.image.source="https://github.com/homelab-autopilot/homelab-autopilot" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/homelab-autopilot /homelab-autopilot
USER 65532:65532
# /metrics, /healthz and /readyz of `homelab-autopilot operator`.
EXPOSE 8080
ENTRYPOINT ["/homelab-autopilot"]
CMD ["operator"]
