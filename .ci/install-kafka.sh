#!/usr/bin/env bash
# Assembles Apache Kafka 4.1.1 (broker + KRaft controller) from Maven Central into the
# checkout's ignored .cache/kafka/lib, for the Kafka integration tests (tests/kafka.rs),
# which start a single-node broker from these jars on free loopback ports.
# Idempotent: does nothing when the jars are already there. Needs Java 17+ and Maven;
# the build of the Rust client (rdkafka, cmake-build) needs cmake, g++ and libcurl's
# headers: librdkafka 2.12 includes <curl/curl.h> even when built without curl
# (librdkafka#5135); nothing of libcurl is linked.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
dir=.cache/kafka
lib=$dir/lib

missing=""
for tool in java mvn cmake g++; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if ! [ -f /usr/include/curl/curl.h ] && ! ls /usr/include/*/curl/curl.h >/dev/null 2>&1; then
    missing="$missing curl.h"
fi
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    pkgs=""
    case "$missing" in *java*) pkgs="$pkgs openjdk-17-jre-headless" ;; esac
    case "$missing" in *mvn*) pkgs="$pkgs maven" ;; esac
    case "$missing" in *cmake*) pkgs="$pkgs cmake" ;; esac
    case "$missing" in *g++*) pkgs="$pkgs g++" ;; esac
    case "$missing" in *curl.h*) pkgs="$pkgs libcurl4-openssl-dev" ;; esac
    $SUDO timeout 300 apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq $pkgs
fi

mkdir -p "$dir"
cat > "$dir/pom.xml.new" <<'POM'
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>centinela.test</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>4.1.1</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>2.25.3</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>2.25.3</version>
    </dependency>
    <!-- Kafka brings slf4j-api 1.7, which does not see log4j-slf4j2-impl (the broker
         then logs nothing, and the tests wait for its "started" line). -->
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>2.0.17</version>
    </dependency>
  </dependencies>
</project>
POM
if [ -f "$lib/.complete" ] && cmp -s "$dir/pom.xml.new" "$dir/pom.xml.done" 2>/dev/null; then
    echo "Kafka jars already in $lib ($(ls "$lib" | wc -l) files); $(( $(date +%s) - start ))s"
    exit 0
fi

mv "$dir/pom.xml.new" "$dir/pom.xml"
rm -rf "$lib"
# Maven's own repository stays inside the cache too, so a second checkout reuses nothing
# by accident and a rerun after a failure starts from what was already downloaded.
timeout 900 mvn -B -q -f "$dir/pom.xml" -Dmaven.repo.local="$PWD/$dir/m2" \
    dependency:copy-dependencies -DoutputDirectory="$PWD/$lib" -DincludeScope=runtime
java -cp "$lib/*" kafka.tools.StorageTool random-uuid >/dev/null
touch "$lib/.complete"
cp "$dir/pom.xml" "$dir/pom.xml.done"
echo "Kafka 4.1.1 jars in $lib ($(ls "$lib" | wc -l) files) in $(( $(date +%s) - start ))s"
