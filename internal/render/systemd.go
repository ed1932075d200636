package render

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/moha-project/moha/internal/config"
)

// Defaults of SystemdOptions.
const (
	DefaultBinary        = "/usr/local/bin/moha"
	DefaultClusterFile   = "/etc/moha/cluster.yaml"
	DefaultMosquittoConf = "/etc/mosquitto/moha.conf"
	// mosquittoBinary is where Debian's mosquitto package installs the broker.
	mosquittoBinary = "/usr/sbin/mosquitto"
)

// Names of the files Systemd renders, relative to a unit directory such as
// /etc/systemd/system.
const (
	AgentUnit       = "moha-agent.service"
	MosquittoDropIn = "mosquitto.service.d/moha.conf"
)

// SystemdOptions says where things are installed on the node.
type SystemdOptions struct {
	Binary      string // the moha binary; default DefaultBinary
	ClusterFile string // the cluster file the agent reads; default DefaultClusterFile
	// MosquittoConf is the broker config rendered by `moha render mosquitto`; default
	// DefaultMosquittoConf. Not in /etc/mosquitto/conf.d: Debian's mosquitto.conf includes
	// that directory, and its listener and persistence settings would clash with ours if
	// anyone started mosquitto on the packaged config.
	MosquittoConf string
}

// Systemd renders the systemd units for node: the agent's service (AgentUnit) and a
// drop-in for Debian's mosquitto.service (MosquittoDropIn) that starts the broker on the
// rendered config. The map is file name -> contents.
func Systemd(c *config.Cluster, node string, opt SystemdOptions) (map[string]string, error) {
	if err := validCluster(c); err != nil {
		return nil, err
	}
	n, err := c.Node(node)
	if err != nil {
		return nil, fmt.Errorf("render systemd: %w", err)
	}
	opt.setDefaults()
	for _, p := range []struct{ name, value string }{
		{"binary", opt.Binary}, {"cluster file", opt.ClusterFile}, {"mosquitto conf", opt.MosquittoConf},
	} {
		if err := checkUnitPath(p.name, p.value); err != nil {
			return nil, err
		}
	}
	what := fmt.Sprintf("cluster %q, node %q (moha render systemd)", c.Name, n.Name)
	return map[string]string{
		AgentUnit:       agentUnit(what, c.Name, n.Name, opt),
		MosquittoDropIn: mosquittoDropIn(what, opt.MosquittoConf),
	}, nil
}

func (o *SystemdOptions) setDefaults() {
	if o.Binary == "" {
		o.Binary = DefaultBinary
	}
	if o.ClusterFile == "" {
		o.ClusterFile = DefaultClusterFile
	}
	if o.MosquittoConf == "" {
		o.MosquittoConf = DefaultMosquittoConf
	}
}

// checkUnitPath accepts an absolute path that is one word of an ExecStart= line as it
// stands: systemd would split it at whitespace, expand % specifiers and $ variables, and
// interpret quotes and backslashes.
func checkUnitPath(name, path string) error {
	if err := checkOptionText(name, path); err != nil {
		return err
	}
	if strings.ContainsAny(path, `%$\"';`) {
		return fmt.Errorf("%w: %s %q contains one of %% $ \\ \" ' ; (special in a systemd command line)", ErrOption, name, path)
	}
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%w: %s %q is not an absolute path", ErrOption, name, path)
	}
	return nil
}

func agentUnit(what, cluster, node string, opt SystemdOptions) string {
	var w writer
	w.header(what)
	w.comment(
		"Clients reach this node only through HAProxy, and HAProxy sends a client here only",
		"while this agent's /readyz answers 200. So the agent being up gates clients: with the",
		"agent down, mosquitto may run but gets no clients, and the agent restarts within a second.",
	)
	w.blank()
	w.line("[Unit]")
	w.line("Description=moha agent for node %s of cluster %s", node, cluster)
	w.comment(
		"BindsTo, not Requires: the agent runs exactly while its broker does. When mosquitto",
		"stops, crashes or fails for good, the agent stops; when systemd starts or restarts",
		"mosquitto, the agent follows. Requires would not keep the agent's state across a broker",
		"crash either (systemd propagates the automatic restart to units that require it); it",
		"would only leave an agent answering /readyz 503 beside a broker that is gone for good.",
	)
	w.line("BindsTo=mosquitto.service")
	w.line("After=network-online.target mosquitto.service")
	w.line("Wants=network-online.target")
	w.comment("Never give up restarting: a node without its agent serves no clients.")
	w.line("StartLimitIntervalSec=0")
	w.blank()
	w.line("[Service]")
	w.line("Type=exec")
	w.line("ExecStart=%s agent --cluster %s --node %s", opt.Binary, opt.ClusterFile, node)
	w.line("Restart=on-failure")
	w.line("RestartSec=1")
	w.comment(
		"Root, to read the cluster file (mode 0600: it holds the cluster secret). The agent",
		"writes no files, so it gets a read-only view of the system.",
	)
	w.line("NoNewPrivileges=yes")
	w.line("ProtectSystem=strict")
	w.line("ProtectHome=read-only")
	w.line("PrivateTmp=yes")
	w.blank()
	w.line("[Install]")
	w.comment("Once enabled, starting mosquitto by hand starts the agent too.")
	w.line("WantedBy=multi-user.target mosquitto.service")
	return w.String()
}

func mosquittoDropIn(what, conf string) string {
	var w writer
	w.header(what)
	w.comment(
		"Start mosquitto on the config moha rendered for this node (moha render mosquitto)",
		"instead of the packaged /etc/mosquitto/mosquitto.conf. The empty ExecStart= clears",
		"the packaged command first: a service may have only one. The packaged config's log",
		"file and pid file are not used: render the broker config with --log-file for a log.",
	)
	w.blank()
	w.line("[Service]")
	w.line("ExecStart=")
	w.line("ExecStart=%s -c %s", mosquittoBinary, conf)
	return w.String()
}
