# A stand-in for prom/prometheus where Docker Hub cannot be reached (image-test builds it on the debootstrap
# base): Debian's Prometheus package, with the official image's entrypoint, user and storage path, so that
# docker-compose.yml runs unchanged with PROMETHEUS_IMAGE=<this image>.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
SHELL ["/bin/sh", "-eu", "-c"]
# hadolint ignore=DL3008
RUN --mount=type=secret,id=ca,required=false \
    set --; if [ -s /run/secrets/ca ]; then set -- -o Acquire::https::CAInfo=/run/secrets/ca; fi; \
    apt-get "$@" update; \
    DEBIAN_FRONTEND=noninteractive apt-get "$@" install -y --no-install-recommends prometheus; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    mkdir -p /prometheus; \
    chown 65534:65534 /prometheus
USER 65534:65534
EXPOSE 9090
VOLUME ["/prometheus"]
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
