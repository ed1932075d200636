package agent

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
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
	base string // share sessions add -s<i>
}

// share returns the id of share session i (see shares).
func (ids clientIDs) share(i int) string { return ids.base + "-s" + strconv.Itoa(i) }

// role names one of the ids for a label: log, scan, share or data.
func (ids clientIDs) role(id string) string {
	switch id {
	case ids.log:
		return "log"
	case ids.scan:
		return "scan"
	}
	if strings.HasPrefix(id, ids.base+"-s") {
		return "share"
	}
	return "data"
}

// Roles name the ids for ClientIDs.
const (
	RoleData  = "data"
	RoleDataB = "data-b"
	RoleLog   = "log"
	RoleScan  = "scan"
	// RoleShare prefixes the share sessions' roles: share-0, share-1, ...
	// (one per peer; see shares).
	RoleShare = "share"
)

func newClientIDs(secret []byte, node string) clientIDs {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("moha agent client id\x00" + node))
	base := "moha-" + node + "-" + hex.EncodeToString(mac.Sum(nil)[:8])
	return clientIDs{data: [2]string{base, base + "-b"}, log: base + "-log", scan: base + "-scan", base: base}
}

// ClientIDs returns the agent's client ids by role (RoleData, RoleDataB,
// RoleLog, RoleScan, RoleShare-<i>): for tests, and for an operator's
// broker ACL.
func (a *Agent) ClientIDs() map[string]string {
	ids := map[string]string{RoleData: a.ids.data[0], RoleDataB: a.ids.data[1], RoleLog: a.ids.log, RoleScan: a.ids.scan}
	for _, slot := range a.shares.slots {
		ids[RoleShare+"-"+strings.TrimPrefix(slot.id, a.ids.base+"-s")] = slot.id
	}
	return ids
}

// ownIDs returns every client id the agent uses with its broker.
func (a *Agent) ownIDs() []string {
	data := a.dataClientIDs()
	ids := []string{data[0], data[1], a.ids.log, a.ids.scan}
	for _, slot := range a.shares.slots {
		ids = append(ids, slot.id)
	}
	return ids
}
