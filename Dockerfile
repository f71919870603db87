# The API and the worker (one image, two commands); only the product, no development tools.
# Build: docker build -t salesflow-billing .
FROM python:3.11.16-slim-trixie
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LOG_FORMAT=json
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY activities activities
COPY workflows workflows
COPY api api
COPY migrations migrations
COPY alembic.ini worker.py ./
# Editable: core/migrate.py finds alembic.ini and migrations/ beside the code in /app.
RUN pip install --no-cache-dir -e . && useradd --system --uid 10001 billing
USER billing
EXPOSE 8000
CMD ["python", "-m", "api"]
