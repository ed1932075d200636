package render

import (
	"fmt"
	"path"
	"path/filepath"
	"strings"

	"github.com/moha-project/moha/internal/config"
)

// MosquittoOptions adjusts the rendered mosquitto.conf.
type MosquittoOptions struct {
	// LogFile, when set, adds `log_dest file <LogFile>` next to the topic destination the
	// agent needs. It must be an absolute path writable by the user mosquitto runs as.
	LogFile string
	// User, when set, is the account mosquitto keeps running as when started as root
	// (its `user` option; mosquitto's default is the "mosquitto" account). `moha up`
	// sets it to its own user so the broker can write the data directory it created.
	User string
}

// logTypes are the log levels the agent needs on $SYS/broker/log/...: connects,
// disconnects and takeovers (notice, error) and every subscribe and unsubscribe.
// Never debug or all: they write a line for every PUBLISH.
var logTypes = []string{"error", "warning", "notice", "information", "subscribe", "unsubscribe"}

// Mosquitto renders the broker config the agent needs for node (see MOSQUITTO.md): a
// listener on the node's broker address, authentication if the node's broker has a
// username, persistence in the node's data_dir, the log lines the agent learns interest
// from, and flow-control limits raised for the agent's traffic.
func Mosquitto(c *config.Cluster, node string, opt MosquittoOptions) (string, error) {
	if err := validCluster(c); err != nil {
		return "", err
	}
	n, err := c.Node(node)
	if err != nil {
		return "", fmt.Errorf("render mosquitto: %w", err)
	}
	if err := checkLogFile(opt.LogFile); err != nil {
		return "", err
	}
	host, port, err := splitAddr(fmt.Sprintf("node %s broker.address", n.Name), n.Broker.Address)
	if err != nil {
		return "", err
	}
	dataDir := strings.TrimRight(n.DataDir, "/") + "/"

	var w writer
	w.header(fmt.Sprintf("cluster %q, node %q (moha render mosquitto)", c.Name, n.Name))
	if err := checkOptionText("user", opt.User); err != nil {
		return "", err
	}
	if opt.User != "" {
		w.comment("The account mosquitto runs as after starting as root.")
		w.line("user %s", opt.User)
		w.blank()
	}
	writeListener(&w, n, host, port, dataDir)
	writePersistence(&w, dataDir)
	writeLogging(&w, opt.LogFile)
	writeLimits(&w, int64(c.MessageSizeLimit), c.MaxQueuedMessages)
	return w.String(), nil
}

func checkLogFile(file string) error {
	if file == "" {
		return nil
	}
	if err := checkOptionText("log file", file); err != nil {
		return err
	}
	if !filepath.IsAbs(file) {
		return fmt.Errorf("%w: log file %q is not an absolute path", ErrOption, file)
	}
	return nil
}

func writeListener(w *writer, n *config.Node, host string, port int, dataDir string) {
	w.comment("The node's broker address: the agent and HAProxy connect here.")
	w.line("listener %d %s", port, host)
	if n.Broker.TLS != nil {
		w.comment(
			"The cluster file has the agent use TLS to this broker, but holds only the client side:",
			"add certfile, keyfile (and cafile with require_certificate true for client",
			"certificates) for this listener by hand.",
		)
	}
	w.blank()
	if t := n.ClientTLS; t != nil {
		w.comment("MQTT over TLS for clients (HAProxy passes it through); the users and ACL below apply to it too.")
		w.line("listener %d %s", t.Port, host)
		w.line("certfile %s", t.Cert)
		w.line("keyfile %s", t.Key)
		if t.CA != "" {
			w.comment("Clients must present a certificate from this CA.")
			w.line("cafile %s", t.CA)
			w.line("require_certificate true")
		}
		w.blank()
	}
	if n.Broker.Username == "" {
		w.comment(
			"The agent connects without a username: so may clients. For production give the agent",
			"a broker username (cluster file: nodes[].broker.username/password): authentication",
			"and an ACL are then rendered (docs/SECURITY.md).",
		)
		w.line("allow_anonymous true")
		w.blank()
		return
	}
	passwd, acl := path.Join(dataDir, "passwd"), ACLPath(n)
	w.comment(
		"The agent connects with a username, so clients must authenticate. Create the",
		"password file before starting mosquitto, owned by the user mosquitto runs as,",
		"with the agent's entry and your clients':",
		fmt.Sprintf("  mosquitto_passwd -c %s %s", passwd, n.Broker.Username),
		fmt.Sprintf("  mosquitto_passwd %s <client user>", passwd),
	)
	w.line("allow_anonymous false")
	w.line("password_file %s", passwd)
	w.comment(
		"Only the agent may use $moha/# and read $SYS; clients get every other topic.",
		fmt.Sprintf("  moha render acl --cluster <file> --node %s > %s", n.Name, acl),
	)
	w.line("acl_file %s", acl)
	w.blank()
}

// ACLPath is where the rendered broker config expects node's ACL file.
func ACLPath(n *config.Node) string {
	return path.Join(strings.TrimRight(n.DataDir, "/"), "acl")
}

// MosquittoACL renders the broker ACL for node (its broker must have a username: the
// agent's): every authenticated user may read and write every topic but the "$" ones
// ('#' matches no topic starting with '$' [MQTT-4.7.2-1]); only the agent may use its
// markers ($moha/#) and read $SYS (the log lines show client ids and addresses).
func MosquittoACL(c *config.Cluster, node string) (string, error) {
	if err := validCluster(c); err != nil {
		return "", err
	}
	n, err := c.Node(node)
	if err != nil {
		return "", fmt.Errorf("render acl: %w", err)
	}
	if n.Broker.Username == "" {
		return "", fmt.Errorf("%w: node %s: an ACL needs the agent's broker username (nodes[].broker.username)", ErrOption, n.Name)
	}
	if strings.ContainsAny(n.Broker.Username, " \t") {
		return "", fmt.Errorf("%w: node %s: broker.username %q holds white space, which an ACL file cannot name", ErrOption, n.Name, n.Broker.Username)
	}
	var w writer
	w.header(fmt.Sprintf("cluster %q, node %q (moha render acl); install at %s", c.Name, n.Name, ACLPath(n)))
	w.comment("Every user: every topic but the \"$\" ones.")
	w.line("pattern readwrite #")
	w.blank()
	w.comment("The agent: its markers, the broker's log lines and counters.")
	w.line("user %s", n.Broker.Username)
	w.line("topic readwrite $moha/#")
	w.line("topic read $SYS/#")
	return w.String(), nil
}

func writePersistence(w *writer, dataDir string) {
	w.comment(
		"Sessions, queued messages and retained messages survive a restart. The directory",
		"must be writable by the user mosquitto runs as (user mosquitto when started as root).",
	)
	w.line("persistence true")
	w.line("persistence_location %s", dataDir)
	w.line("autosave_interval 60")
	w.blank()
}

func writeLogging(w *writer, logFile string) {
	w.comment(
		"The agent learns connects, disconnects, takeovers and subscriptions from",
		"$SYS/broker/log/... One log_type per line: several on one line silently enable only",
		"the first. Per-message log types would log every PUBLISH: keep them off.",
	)
	w.line("log_dest topic")
	if logFile != "" {
		w.line("log_dest file %s", logFile)
	}
	for _, t := range logTypes {
		w.line("log_type %s", t)
	}
	w.comment("Without connection messages the agent cannot see clients come and go.")
	w.line("connection_messages true")
	w.blank()
}

func writeLimits(w *writer, messageSizeLimit int64, maxQueued int) {
	w.comment(
		"What this broker accepts must cross the agents' links: a larger payload is refused here",
		"(MQTT v5: reason 0x95; MQTT 3.1.1: dropped, as by any broker with this limit) rather",
		"than lost later (cluster file: message_size_limit).",
	)
	w.line("message_size_limit %d", messageSizeLimit)
	w.comment(
		"The agent's sessions receive every message published on this broker and a log line per",
		"subscription: queue deeply rather than drop (the default is 1000, then silent loss).",
		"While clients subscribe in bulk the broker reads the agent's acknowledgements one per",
		"loop turn, so a burst of a million subscriptions queues nearly a million log lines.",
		"This bounds every client's queue, so a stuck subscriber may hold as many",
		"(cluster file: max_queued_messages).",
	)
	w.line("max_queued_messages %d", maxQueued)
	w.comment(
		"Advertised to MQTT 5 clients as Receive Maximum, and the agent republishes every peer's",
		"messages on one session within it: at the default (20) it had to write one message per",
		"PUBACK, its largest cost under load. It is also how many messages may wait unacknowledged",
		"at an MQTT 3.1.1 subscriber.",
	)
	w.line("max_inflight_messages 1000")
	w.comment(
		"The agent reconciles its interest table against the $SYS subscription counts:",
		"publish them every second rather than every 10.",
	)
	w.line("sys_interval 1")
}
