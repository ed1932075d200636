package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/spf13/cobra"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/render"
)

// renderFlags are the flags of `moha render`; each file reads the ones it needs.
type renderFlags struct {
	clusterFile, node, lb string
	logFile               string // mosquitto
	unicast               bool   // keepalived
	pidDir                string // keepalived
	systemd               render.SystemdOptions
	dir                   string // systemd: write the files here instead of printing them
}

func newRenderCommand(stdout io.Writer) *cobra.Command {
	var f renderFlags
	cmd := &cobra.Command{
		Use:   "render mosquitto|acl|haproxy|keepalived|systemd --cluster FILE [flags]",
		Short: "Print a configuration file rendered from the cluster description",
		Long: `Print the configuration an operator installs, rendered from the cluster file:

  mosquitto   the broker config the agent needs (--node required): listener,
              log lines published on $SYS topics, persistence, queue limits;
              with a broker username: authentication and an ACL file; with
              client_tls: a TLS listener for clients
  acl         the broker ACL for one node (--node required; needs the node's
              broker.username): only the agent may use $moha/# and read $SYS
  haproxy     the load balancer: MQTT-aware TCP mode, client-id placement,
              health checks on each agent's /readyz
  keepalived  the floating IP for one load balancer host (--lb required): VRRPv3,
              held by the healthiest host whose HAProxy accepts connections
  systemd     the units for one node (--node required): moha-agent.service and
              the mosquitto.service drop-in that starts the broker on the
              rendered config; printed one after the other, or written under --dir

Install on each node, for example:
  moha render mosquitto --cluster c.yaml --node n1 > /etc/mosquitto/moha.conf
  moha render acl --cluster c.yaml --node n1 > <data_dir>/acl   (with a broker username)
  moha render systemd --cluster c.yaml --node n1 --dir /etc/systemd/system
  systemctl daemon-reload && systemctl restart mosquitto && systemctl enable --now moha-agent
and on each load balancer host:
  moha render haproxy --cluster c.yaml > /etc/haproxy/haproxy.cfg
  moha render keepalived --cluster c.yaml --lb lb1 > /etc/keepalived/keepalived.conf`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("render what? name one file: mosquitto, acl, haproxy, keepalived or systemd")
			}
			return nil
		},
		ValidArgs: []string{"mosquitto", "acl", "haproxy", "keepalived", "systemd"},
		RunE: func(_ *cobra.Command, args []string) error {
			c, err := config.Load(f.clusterFile)
			if err != nil {
				return err
			}
			return renderFile(stdout, c, args[0], &f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.clusterFile, "cluster", "cluster.yaml", "the cluster description (YAML)")
	fl.StringVar(&f.node, "node", "", "the node to render for (mosquitto, acl, systemd)")
	fl.StringVar(&f.logFile, "log-file", "", "mosquitto: also log to this file (absolute path, writable by the broker's user)")
	fl.StringVar(&f.lb, "lb", "", "the load balancer host to render for (keepalived)")
	fl.BoolVar(&f.unicast, "unicast", false, "keepalived: VRRP adverts to the other hosts' addresses instead of multicast")
	fl.StringVar(&f.pidDir, "pid-dir", "", "keepalived: `DIR` for the pid files when several keepalived share a machine (adds instance <lb>; a comment gives the flags)")
	fl.StringVar(&f.systemd.Binary, "binary", render.DefaultBinary, "systemd: the installed moha binary")
	fl.StringVar(&f.systemd.ClusterFile, "installed-cluster", render.DefaultClusterFile, "systemd: where the cluster file is installed on the node")
	fl.StringVar(&f.systemd.MosquittoConf, "mosquitto-conf", render.DefaultMosquittoConf, "systemd: where the rendered mosquitto config is installed")
	fl.StringVar(&f.dir, "dir", "", "systemd: write the files under this unit directory (e.g. /etc/systemd/system) instead of printing them")
	return cmd
}

// renderFile writes the file called what to stdout (or, for systemd with --dir, to files).
func renderFile(stdout io.Writer, c *config.Cluster, what string, f *renderFlags) error {
	var out string
	var err error
	switch what {
	case "mosquitto":
		if f.node == "" {
			return errors.New("render mosquitto needs --node (one of the cluster's nodes)")
		}
		out, err = render.Mosquitto(c, f.node, render.MosquittoOptions{LogFile: f.logFile})
	case "acl":
		if f.node == "" {
			return errors.New("render acl needs --node (one of the cluster's nodes)")
		}
		out, err = render.MosquittoACL(c, f.node)
	case "haproxy":
		out, err = render.HAProxy(c, render.HAProxyOptions{})
	case "keepalived":
		if f.lb == "" {
			return errors.New("render keepalived needs --lb (one of load_balancers.hosts)")
		}
		out, err = render.Keepalived(c, f.lb, render.KeepalivedOptions{PidDir: f.pidDir, Unicast: f.unicast})
	case "systemd":
		if f.node == "" {
			return errors.New("render systemd needs --node (one of the cluster's nodes)")
		}
		return renderSystemd(stdout, c, f)
	default:
		return fmt.Errorf("unknown file %q: want mosquitto, acl, haproxy, keepalived or systemd", what)
	}
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, out)
	return err
}

// renderSystemd prints the units one after the other, each under a comment naming its
// file, or writes them under f.dir and prints their paths.
func renderSystemd(stdout io.Writer, c *config.Cluster, f *renderFlags) error {
	files, err := render.Systemd(c, f.node, f.systemd)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for i, name := range names {
		if f.dir != "" {
			path := filepath.Join(f.dir, name)
			if err := writeUnitFile(path, files[name]); err != nil {
				return err
			}
			fmt.Fprintln(stdout, path)
			continue
		}
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		fmt.Fprintf(stdout, "### %s\n%s", name, files[name])
	}
	return nil
}

func writeUnitFile(path, contents string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write unit: %w", err)
	}
	if err := os.WriteFile(path, []byte(contents), 0o644); err != nil {
		return fmt.Errorf("write unit: %w", err)
	}
	return nil
}
