//! Provisioning on the ESP8266's own access point (work in progress).
