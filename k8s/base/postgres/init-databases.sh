#!/bin/sh
# Run once by the postgres image on an empty data directory: one database and
# one owning role per service, so neither service can touch the other's tables.
# The passwords come from the environment (the Secret in Kubernetes).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v inventory_pw="$INVENTORY_DB_PASSWORD" -v orders_pw="$ORDERS_DB_PASSWORD" <<'SQL'
CREATE ROLE seckill_inventory LOGIN PASSWORD :'inventory_pw';
CREATE DATABASE seckill_inventory OWNER seckill_inventory;
CREATE ROLE seckill_orders LOGIN PASSWORD :'orders_pw';
CREATE DATABASE seckill_orders OWNER seckill_orders;
SQL
