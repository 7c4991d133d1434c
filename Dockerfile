# One image for the SSE proxy (`sse-proxy`), the `redisops` CLI (reconcile, backups,
# restore drills) and the smoke suite (`redisops smoke`, `python -m smoke_tests.sse_check`).
#
# The base is pinned by digest. The digest below was recorded from public sources (no
# registry is reachable where this repository is built); verify and refresh it with
#   docker buildx imagetools inspect python:3.11-slim-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

# --- build: a virtualenv with the project and its pinned dependencies (all wheels) ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
# Dependencies first, in their own layer: a change to the sources alone reinstalls only
# the project (empty package directories stand in for the sources here).
RUN python -m venv /opt/redis-platform \
 && mkdir redisops sse_proxy smoke_tests \
 && /opt/redis-platform/bin/pip install --constraint constraints.txt . \
 && /opt/redis-platform/bin/pip uninstall --yes redis-platform
COPY redisops ./redisops
COPY sse_proxy ./sse_proxy
COPY smoke_tests ./smoke_tests
RUN /opt/redis-platform/bin/pip install --no-deps --constraint constraints.txt . \
 && /opt/redis-platform/bin/pip check \
 && /opt/redis-platform/bin/redisops --help >/dev/null \
 && /opt/redis-platform/bin/sse-proxy --help >/dev/null

# --- runtime: no compilers, no pip cache; redis-server (the StatefulSet's servers and
#     the scratch servers of restores and drills: one Redis build), redis-cli,
#     redis-check-rdb. /data and /var/lib/redis-platform belong to the app user, so
#     volumes mounted there without Kubernetes' fsGroup (docker-compose.yml) are its own ---
FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-tools redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 app \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin app \
 && install -d -o 10001 -g 10001 -m 0700 /data /var/lib/redis-platform
COPY --from=build /opt/redis-platform /opt/redis-platform
ENV PATH=/opt/redis-platform/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080
CMD ["sse-proxy", "--config", "/etc/sse-proxy/config.json"]
