# Sourced by bench/run and bench/pgo. With PostgreSQL on 127.0.0.1:5432 (as
# on the project machine) and no SWITCHBOARD_BENCH_DATABASE_URL given, the
# PostgreSQL scenarios run against a database of their own there.
if [ -z "${SWITCHBOARD_BENCH_DATABASE_URL:-}" ] && command -v pg_isready >/dev/null 2>&1 \
   && pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  psql -h 127.0.0.1 -U postgres -q -c "CREATE DATABASE switchboard_bench" >/dev/null 2>&1 || true
  export SWITCHBOARD_BENCH_DATABASE_URL="postgres://postgres@127.0.0.1:5432/switchboard_bench"
fi
