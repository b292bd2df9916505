# syntax=docker/dockerfile:1
# Build: docker build -t giftsync .   Run: docker run -p 8000:8000 --env-file .env giftsync
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/giftsync
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
RUN /opt/giftsync/bin/pip install --no-cache-dir .

FROM python:3.11-slim AS runtime
RUN useradd --create-home --uid 10001 giftsync
COPY --from=build /opt/giftsync /opt/giftsync
WORKDIR /srv/giftsync
COPY --chown=giftsync alembic.ini ./
COPY --chown=giftsync migrations ./migrations
USER giftsync
ENV PATH=/opt/giftsync/bin:$PATH PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)" || exit 1
CMD ["giftsync", "serve", "--host", "0.0.0.0", "--port", "8000"]
