// Package internal pins the project's dependencies until the packages that use them land.
package internal

import (
	_ "github.com/eclipse/paho.golang/packets"
	_ "github.com/eclipse/paho.golang/paho"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/spf13/cobra"
	_ "go.yaml.in/yaml/v3"
)
