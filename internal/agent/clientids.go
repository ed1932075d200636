package agent

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
)

// clientIDs are the MQTT client ids the agent uses with its broker. They
// carry a tag derived from the cluster secret and the node's name: stable
// across restarts (the data session must be found again), and unguessable
// without the secret, so that no client can take over the agent's sessions
// by connecting with their id (Mosquitto closes the older connection).
type clientIDs struct {
	data [2]string // the data session's two ids (see startData)
	log  string
	scan string
}

// Roles name the ids for ClientIDs.
const (
	RoleData  = "data"
	RoleDataB = "data-b"
	RoleLog   = "log"
	RoleScan  = "scan"
)

func newClientIDs(secret []byte, node string) clientIDs {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("moha agent client id\x00" + node))
	base := "moha-" + node + "-" + hex.EncodeToString(mac.Sum(nil)[:8])
	return clientIDs{data: [2]string{base, base + "-b"}, log: base + "-log", scan: base + "-scan"}
}

// ClientIDs returns the agent's client ids by role (RoleData, RoleDataB,
// RoleLog, RoleScan): for tests, and for an operator's broker ACL.
func (a *Agent) ClientIDs() map[string]string {
	return map[string]string{RoleData: a.ids.data[0], RoleDataB: a.ids.data[1], RoleLog: a.ids.log, RoleScan: a.ids.scan}
}
