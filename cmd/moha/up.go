package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/moha-project/moha/internal/launch"
)

func newUpCommand(stdout, stderr io.Writer) *cobra.Command {
	var (
		nodes, port   int
		dir, logLevel string
	)
	cmd := &cobra.Command{
		Use:   "up [--nodes N] [--port P] [--dir D]",
		Short: "Start a complete local cluster: brokers, agents and HAProxy",
		Long: `Start a complete moha cluster on this machine for trying it out: N Mosquitto
brokers on free 127.0.0.1 ports, one agent per broker, and HAProxy in front on
--port. Connect any MQTT client to the load balancer (or to a broker directly).

It writes <dir>/cluster.yaml (the cluster description, with a fresh secret),
<dir>/cluster.json (the live endpoints, once everything is ready) and one log
per process in <dir>/logs/. Ctrl-C or SIGTERM stops everything it started.

Needs mosquitto and haproxy: sudo apt-get install -y mosquitto haproxy`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if nodes < 1 || nodes > 64 {
				return fmt.Errorf("--nodes %d: want 1 to 64", nodes)
			}
			if port < 1 || port > 65535 {
				return fmt.Errorf("--port %d: want 1 to 65535", port)
			}
			log, err := newLogger(stderr, logLevel)
			if err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find own binary for the agents: %w", err)
			}
			c, err := launch.Up(cmd.Context(), launch.Options{Nodes: nodes, LBPort: port, Dir: dir, AgentBinary: self, Logger: log})
			if err != nil {
				return err
			}
			defer c.Close()
			printEndpoints(stdout, c)
			<-cmd.Context().Done()
			fmt.Fprintln(stdout, "stopping the cluster…")
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&nodes, "nodes", 3, "number of brokers (each with its agent)")
	f.IntVar(&port, "port", 1883, "the load balancer's client port on 127.0.0.1")
	f.StringVar(&dir, "dir", ".moha", "directory for the cluster's files and logs")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

func printEndpoints(w io.Writer, c *launch.Cluster) {
	e := c.Endpoints()
	fmt.Fprintf(w, "moha cluster up: %d nodes\n", len(e.Nodes))
	fmt.Fprintf(w, "  load balancer   mqtt://%s\n", e.LB)
	for _, n := range e.Nodes {
		fmt.Fprintf(w, "  %-8s broker mqtt://%s   agent http://%s/status\n", n.Name, n.Broker, n.HTTP)
	}
	fmt.Fprintf(w, "endpoints: %s\nlogs:      %s\n", filepath.Join(e.Dir, "cluster.json"), filepath.Join(e.Dir, "logs"))
	fmt.Fprintln(w, "For trying moha out: the brokers take anonymous clients and listen on 127.0.0.1 only.")
	fmt.Fprintln(w, "(A cluster file with broker usernames renders authenticated brokers: docs/HA.md, Installing.)")
	fmt.Fprintln(w, "Ctrl-C stops everything.")
}
