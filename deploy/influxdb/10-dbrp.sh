#!/bin/sh
# Run once by the influxdb:2.x image after its first setup: the v1 API (/write, /query) that
# safewatch speaks resolves database `safewatch`, policy `autogen`, to the bucket made at setup.
set -e
influx v1 dbrp create --org "${DOCKER_INFLUXDB_INIT_ORG}" \
  --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" --db safewatch --rp autogen --default
