# The engine's image: a slim Python, the package installed from pyproject.toml, a non-root user.
# routes.yaml, prompts/ and logs/ are bind-mounted by docker-compose.yml, so routing edits need no rebuild;
# the copies baked in here are the defaults when the image runs on its own.

FROM python:3.13-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# UID 1000 is the first user on a Debian host, so files the engine writes into the bind-mounted logs/
# belong to that user. Build with --build-arg UID=$(id -u) if yours differs.
ARG UID=1000
ARG GID=1000
RUN groupadd --gid "${GID}" engine \
 && useradd --uid "${UID}" --gid "${GID}" --no-create-home --shell /usr/sbin/nologin engine

WORKDIR /app

# The package and its metadata (README.md* so a checkout without the README still builds).
COPY pyproject.toml README.md* ./
COPY engine/ engine/
# Editable install: the package stays at /app/engine, next to schemas/, prompts/ and routes.yaml, so
# paths the engine resolves relative to its source tree or to the working directory both work.
RUN pip install -e . \
 && rm -rf /root/.cache

COPY schemas/ schemas/
COPY prompts/ prompts/
COPY routes.yaml ./
RUN mkdir -p logs/sessions && chown -R engine:engine logs

USER engine

EXPOSE 8000

# Stdlib only: the slim image has no curl.
HEALTHCHECK --interval=15s --timeout=8s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://localhost:8000/health', timeout=5)"]

CMD ["engine", "serve", "--host", "0.0.0.0", "--port", "8000"]
