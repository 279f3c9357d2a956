# switchback/etcd: Debian's etcd (the same package the local cluster and the tests use) on
# the slim base. deploy/docker/build-images.sh builds it; the build runs apt, so it needs
# the Debian mirror (not a container registry).
#
#   docker run -d -p 127.0.0.1:2379:2379 -v etcd-data:/var/lib/etcd switchback/etcd:dev
#
# The default command is a single member named `etcd` that advertises http://etcd:2379
# (its compose service name); pass your own flags to change that.
ARG BASE=switchback/debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends etcd-server etcd-client \
 && rm -rf /var/lib/apt/lists/*
# The package made the etcd user and its home /var/lib/etcd; data goes in a subdirectory
# that etcd creates with the 0700 mode it wants (mount a volume on /var/lib/etcd).
USER etcd
WORKDIR /var/lib/etcd
EXPOSE 2379 2380
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
  CMD ["etcdctl", "--endpoints=http://127.0.0.1:2379", "--command-timeout=2s", "endpoint", "health"]
ENTRYPOINT ["etcd"]
CMD ["--name", "etcd", "--data-dir", "/var/lib/etcd/data", \
     "--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", "http://etcd:2379", \
     "--listen-peer-urls", "http://0.0.0.0:2380", "--initial-advertise-peer-urls", "http://etcd:2380", \
     "--initial-cluster", "etcd=http://etcd:2380", "--log-level", "warn"]
