#!/bin/sh
# Run once by the influxdb:2.x image after its first setup. safewatch speaks the v1 API (/write,
# /query), which resolves a database/retention policy through a DBRP mapping, one per bucket:
#   safewatch/autogen   -> the bucket made at setup (default policy: the worker's raw points)
#   safewatch/rollup_1m -> bucket safewatch_rollup_1m   (`safewatch history rollup` writes it)
#   safewatch/rollup_1h -> bucket safewatch_rollup_1h
#   safewatch/events    -> bucket safewatch_events      (the worker's long copy of hazards, incidents)
# Retentions follow the SAFEWATCH_INFLUX_*_RETENTION settings' defaults (docs/retention.md).
# Not run on InfluxDB 2.x in this repository's tests (none is installable there): see docs/retention.md.
set -e
ORG="${DOCKER_INFLUXDB_INIT_ORG}"
influx v1 dbrp create --org "$ORG" \
  --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" --db safewatch --rp autogen --default

bucket() {  # name, retention, policy
  id=$(influx bucket create --org "$ORG" --name "$1" --retention "$2" --hide-headers | awk '{print $1}')
  influx v1 dbrp create --org "$ORG" --bucket-id "$id" --db safewatch --rp "$3"
}
bucket safewatch_rollup_1m "${ROLLUP_1M_RETENTION:-400d}" rollup_1m
bucket safewatch_rollup_1h "${ROLLUP_1H_RETENTION:-1830d}" rollup_1h
bucket safewatch_events "${EVENTS_RETENTION:-1830d}" events
