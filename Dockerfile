# The Log Retention Console: dashboard + HTTP trigger in one process on $PORT.
#   docker build -t log-retention-console .
#   docker run -p 8501:8501 -e DATABASE_URL=postgresql+psycopg2://… -e CLEANUP_TRIGGER_TOKEN=… log-retention-console
# The container's disk is not a backup store: set BACKUP_STORE=s3://bucket/prefix and the AWS_*
# variables (docs/deploy.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    PORT=8501 \
    BACKUP_DIR=/app/backups \
    BACKUP_STORE= \
    BACKUP_KEEP_LOCAL=

WORKDIR /app

COPY requirements.txt .
RUN pip install -r requirements.txt

# Application code only: .dockerignore keeps .env, secrets.toml, local.db, backups and .venv out.
COPY . .

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
    && mkdir -p /app/backups \
    && chown -R app:app /app/backups
USER app

EXPOSE 8501

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8501'), timeout=4)"

# Shell form so $PORT (set by Render, Railway, Fly, Cloud Run…) is expanded; exec so signals reach streamlit.
CMD exec streamlit run server.py --server.port $PORT --server.address 0.0.0.0
