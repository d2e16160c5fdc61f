# Production image: the same settings module as the embedded default, configured by the
# environment (see README "Configuration"). Used by docker-compose.yml.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 GROWTH_VAR_DIR=/var/lib/growth
RUN useradd --system --create-home --home-dir /app growth \
 && mkdir -p /var/lib/growth && chown growth /var/lib/growth
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY --chown=growth . .
# Static files are collected at build time and served by WhiteNoise from the web process.
RUN DJANGO_SECRET_KEY=build-only DJANGO_ALLOWED_HOSTS=build python manage.py collectstatic --no-input -v 0
USER growth
EXPOSE 8000
CMD ["gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--workers", "4", "--access-logfile", "-"]
