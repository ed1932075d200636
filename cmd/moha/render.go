package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/render"
)

func newRenderCommand(stdout io.Writer) *cobra.Command {
	var clusterFile, node string
	cmd := &cobra.Command{
		Use:   "render mosquitto|haproxy --cluster FILE [--node NAME]",
		Short: "Print a configuration file rendered from the cluster description",
		Long: `Print the configuration an operator installs, rendered from the cluster file:

  mosquitto   the broker config the agent needs (--node required): listener,
              log lines published on $SYS topics, persistence, queue limits
  haproxy     the load balancer: MQTT-aware TCP mode, client-id stickiness,
              health checks on each agent's /readyz`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"mosquitto", "haproxy"},
		RunE: func(_ *cobra.Command, args []string) error {
			c, err := config.Load(clusterFile)
			if err != nil {
				return err
			}
			var out string
			switch args[0] {
			case "mosquitto":
				if node == "" {
					return fmt.Errorf("render mosquitto needs --node (one of the cluster's nodes)")
				}
				out, err = render.Mosquitto(c, node, render.MosquittoOptions{})
			case "haproxy":
				out, err = render.HAProxy(c, render.HAProxyOptions{})
			default:
				return fmt.Errorf("unknown file %q: want mosquitto or haproxy", args[0])
			}
			if err != nil {
				return err
			}
			_, err = io.WriteString(stdout, out)
			return err
		},
	}
	cmd.Flags().StringVar(&clusterFile, "cluster", "cluster.yaml", "the cluster description (YAML)")
	cmd.Flags().StringVar(&node, "node", "", "the node to render for (mosquitto)")
	return cmd
}
