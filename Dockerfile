# telebridge: a small image on Python 3.13 (audioop comes from audioop-lts there).
FROM python:3.13-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY telebridge ./telebridge
# EXTRAS="[cluster]" adds PostgreSQL and Redis support (config/compose.yaml builds it so).
ARG EXTRAS=""
RUN pip install --no-cache-dir --prefix=/install ".${EXTRAS}"

FROM python:3.13-slim
RUN useradd --system --uid 10001 --home-dir /app telebridge
WORKDIR /app
COPY --from=build /install /usr/local
COPY config ./config
RUN mkdir -p /app/data && chown telebridge /app/data
USER telebridge
ENV TELEBRIDGE_HOST=0.0.0.0 TELEBRIDGE_PORT=8080 TELEBRIDGE_DB=/app/data/telebridge.db
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"
CMD ["telebridge", "serve"]
