# One image for all six driftline services. The service is the command:
#
#   docker run driftline:local serve predictor
#   docker run -p 8000:8000 driftline:local serve ingest --host 0.0.0.0 --port 8000
#
# Configuration is the DRIFTLINE_* environment (libs/driftline/config.py);
# docker-compose.yml wires the whole cluster.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- build
# Every dependency ships manylinux wheels for CPython 3.11 (confluent-kafka, chdb,
# numpy, scipy, scikit-learn, river, ...), so no compiler is needed; the build
# stage only keeps the source tree and pip's work out of the final image.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject's own list under the same pins, so a code
# change does not reinstall them; `pip install .` below then resolves to the same set.
COPY pyproject.toml constraints.txt ./
RUN pip install -c constraints.txt --upgrade pip setuptools wheel \
 && python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -c constraints.txt -r /tmp/requirements.txt
COPY README.md ./
COPY libs ./libs
COPY schemas ./schemas
COPY services ./services
RUN pip install -c constraints.txt . \
 && driftline --help > /dev/null \
 && python -c "import driftline.entry.serve, driftline.services.registry.app, driftline.services.ingest.app"

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="driftline" \
      org.opencontainers.image.description="driftline services: ingest, predictor, label-joiner, drift-detector, retrainer, registry" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DRIFTLINE_HOME=/var/lib/driftline
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can check it.
RUN groupadd --system --gid 10001 driftline \
 && useradd --system --uid 10001 --gid driftline --home-dir /var/lib/driftline --shell /usr/sbin/nologin driftline \
 && install -d -o driftline -g driftline -m 0750 /var/lib/driftline
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /var/lib/driftline
# DRIFTLINE_HOME. The registry keeps its artifacts under DRIFTLINE_HOME/registry:
# mount a volume here for it (docker-compose.yml does); the other services keep no
# local state (their checkpoints live in ClickHouse).
EXPOSE 8000
ENTRYPOINT ["driftline"]
CMD ["--help"]
