# timbal-jobs-bot: one image for every role (`run`, `run --no-commands`, `check`, `poll --once`).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=3000

# A fixed, unprivileged uid/gid, so volume permissions and Kubernetes' runAsNonRoot agree.
RUN groupadd --system --gid 10001 bot \
    && useradd --system --uid 10001 --gid bot --home-dir /app --shell /usr/sbin/nologin bot

WORKDIR /app

# Only what the distribution needs (see .dockerignore): metadata first, then the packages.
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY storage ./storage
RUN pip install --no-cache-dir . \
    && rm -rf /app/bot /app/handlers /app/storage /app/build /app/*.egg-info

USER 10001:10001

EXPOSE 3000

# The slim image has no curl: ask /healthz with the interpreter we already ship.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + (os.environ.get('PORT') or '3000') + '/healthz', timeout=4)"]

ENTRYPOINT ["timbal-jobs-bot"]
CMD ["run"]
