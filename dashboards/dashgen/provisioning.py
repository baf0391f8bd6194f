"""Grafana provisioning: the InfluxDB data source and the dashboards' file provider."""

from __future__ import annotations

from .common import (
    DATASOURCE_UID,
    FOLDER_PATH,
    Json,
)


def datasource_provisioning() -> Json:
    return {
        "apiVersion": 1,
        "datasources": [{
            "name": "fieldproof InfluxDB",
            "uid": DATASOURCE_UID,
            "type": "influxdb",
            "access": "proxy",
            "url": "${FIELDPROOF_INFLUX_URL}",
            "user": "${FIELDPROOF_INFLUX_USER}",
            "jsonData": {
                "version": "InfluxQL",
                "dbName": "${FIELDPROOF_INFLUX_DB}",
                "httpMode": "POST",
                "timeInterval": "1m",
            },
            "secureJsonData": {"password": "${FIELDPROOF_INFLUX_PASSWORD}"},
            "editable": False,
        }],
    }


def dashboard_provisioning(folder: str) -> Json:
    return {
        "apiVersion": 1,
        "providers": [{
            "name": "fieldproof",
            "orgId": 1,
            "folder": folder,
            "type": "file",
            "disableDeletion": True,
            "allowUiUpdates": False,
            "updateIntervalSeconds": 60,
            "options": {"path": FOLDER_PATH, "foldersFromFilesStructure": False},
        }],
    }
