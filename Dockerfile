# apikm container image: `docker build -t apikm .`
# Runs as an unprivileged user; configuration comes from APIKM_* environment variables.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# With the redis extra: replicas share limits and wake each other through Redis when
# APIKM_RATE_LIMIT_STORAGE=redis://... is set.
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels ".[redis]"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/apikm --create-home apikm
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER apikm
WORKDIR /var/lib/apikm
ENV APIKM_HOST=0.0.0.0 \
    APIKM_PORT=8000 \
    APIKM_DATA_DIR=/var/lib/apikm \
    APIKM_LOG_JSON=true \
    PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
ENTRYPOINT ["apikm"]
CMD ["serve", "--no-migrate"]
