package fsm

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// store is a State with the indexes that keep every command's checks
// O(size of the change) rather than O(state). The indexes are derived:
// they are rebuilt from the State on Restore and ReplaceState and are
// never serialised.
type store struct {
	state *State
	// vipByAddr maps a VIP address to the VIP's name.
	vipByAddr map[netip.Addr]string
	// svcByID maps a kernel identity to the service's name.
	svcByID map[ServiceIdentity]string
	// svcsByVIP maps a VIP name to the names of the services using it.
	svcsByVIP map[string]map[string]struct{}
}

func newStore() *store {
	return &store{
		state:     NewState(),
		vipByAddr: map[netip.Addr]string{},
		svcByID:   map[ServiceIdentity]string{},
		svcsByVIP: map[string]map[string]struct{}{},
	}
}

// prepare validates cmd, a command value, against s and returns the
// change that applies it. prepare itself never modifies s, which is what
// lets Check run it under a read lock and Apply refuse a command without
// a trace. The change copies everything it stores from cmd. index is the
// entry's Raft index, which health transitions record.
func (s *store) prepare(cmd Command, index uint64) (commit func(), err error) {
	switch c := cmd.(type) {
	case AddVIP:
		return s.addVIP("vip", c.VIP)
	case DeleteVIP:
		return s.deleteVIP(c)
	case AddService:
		if err := refuseDerived("service", &c.Service); err != nil {
			return nil, err
		}
		return s.addService("service", &c.Service)
	case UpdateService:
		return s.updateService(c)
	case DeleteService:
		return s.deleteService(c)
	case AddServer:
		return s.addServer(c)
	case UpdateServer:
		return s.updateServer(c)
	case DeleteServer:
		return s.deleteServer(c)
	case ReplaceState:
		// A restore replaces the configuration, not the credentials:
		// a saved snapshot must neither lock operators out nor bring
		// back revoked tokens.
		if len(c.State.Tokens) > 0 {
			return nil, invalid("state.tokens", "tokens are not restored with the configuration: manage them with clusterctl token")
		}
		if c.State.Keyring != nil {
			return nil, invalid("state.keyring", "the gossip keyring is not restored with the configuration: manage it with clusterctl keyring")
		}
		ns, err := buildStore(&c.State)
		if err != nil {
			return nil, err
		}
		ns.state.Tokens = cloneTokens(s.state.Tokens)
		ns.state.Keyring = s.state.Keyring.Clone()
		return func() { *s = *ns }, nil
	case CreateToken:
		return s.createToken("token", c)
	case RevokeToken:
		return s.revokeToken(c)
	case InstallKey:
		return s.installKey(c)
	case UseKey:
		return s.useKey(c)
	case RemoveKey:
		return s.removeKey(c)
	case SetHealth:
		return s.setHealth(c, index)
	}
	return nil, fmt.Errorf("%T is not an fsm command: %w", cmd, ErrUnsupportedCommand)
}

// buildStore validates a whole state and returns a store holding a
// normalised deep copy of it. It adds the VIPs and then the services in
// name order through the same code the single-object commands use, so the
// rules are the same and the first error reported is always the same one.
func buildStore(st *State) (*store, error) {
	ns := newStore()
	for _, name := range slices.Sorted(maps.Keys(st.VIPs)) {
		p := "vips[" + name + "]"
		v := st.VIPs[name]
		if v == nil {
			return nil, invalid(p, "is null")
		}
		if v.Name != name {
			return nil, invalid(p+".name", "%q does not match its key %q", v.Name, name)
		}
		commit, err := ns.addVIP(p, *v)
		if err != nil {
			return nil, err
		}
		commit()
	}
	for _, name := range slices.Sorted(maps.Keys(st.Services)) {
		p := "services[" + name + "]"
		svc := st.Services[name]
		if svc == nil {
			return nil, invalid(p, "is null")
		}
		if svc.Name != name {
			return nil, invalid(p+".name", "%q does not match its key %q", svc.Name, name)
		}
		commit, err := ns.addService(p, svc)
		if err != nil {
			return nil, err
		}
		commit()
	}
	if err := ns.addTokens(st.Tokens); err != nil {
		return nil, err
	}
	if err := ns.setKeyring(st.Keyring); err != nil {
		return nil, err
	}
	ns.state.Index = st.Index
	return ns, nil
}

func (s *store) addVIP(p string, v VIP) (func(), error) {
	if err := validateVIP(p, &v); err != nil {
		return nil, err
	}
	if _, ok := s.state.VIPs[v.Name]; ok {
		return nil, conflict(p+".name", "VIP %q already exists", v.Name)
	}
	addr := v.Prefix.Addr()
	if other, ok := s.vipByAddr[addr]; ok {
		return nil, conflict(p+".prefix", "address %s is already VIP %q", addr, other)
	}
	return func() {
		s.state.VIPs[v.Name] = &v
		s.vipByAddr[addr] = v.Name
	}, nil
}

func (s *store) deleteVIP(c DeleteVIP) (func(), error) {
	v, ok := s.state.VIPs[c.Name]
	if !ok {
		return nil, notFound("vip.name", "VIP %q does not exist", c.Name)
	}
	users := slices.Sorted(maps.Keys(s.svcsByVIP[c.Name]))
	if len(users) > 0 && !c.Force {
		return nil, conflict("vip.name", "VIP %q is used by services %s: delete them first, or force to delete them with it",
			c.Name, strings.Join(users, ", "))
	}
	return func() {
		for _, name := range users {
			s.removeService(name)
		}
		delete(s.state.VIPs, c.Name)
		delete(s.vipByAddr, v.Prefix.Addr())
		delete(s.svcsByVIP, c.Name)
	}, nil
}

// addService validates a copy of in and returns the change that stores
// the copy.
func (s *store) addService(p string, in *Service) (func(), error) {
	svc := in.Clone()
	if err := validateName(p+".name", svc.Name); err != nil {
		return nil, err
	}
	if _, ok := s.state.Services[svc.Name]; ok {
		return nil, conflict(p+".name", "service %q already exists", svc.Name)
	}
	id, err := s.checkServiceIdentity(p, svc)
	if err != nil {
		return nil, err
	}
	if err := validateServiceSettings(p, svc); err != nil {
		return nil, err
	}
	if err := validateServiceHealth(p, svc); err != nil {
		return nil, err
	}
	for _, key := range slices.Sorted(maps.Keys(svc.Servers)) {
		sp := p + ".servers[" + key + "]"
		srv := svc.Servers[key]
		if srv == nil {
			return nil, invalid(sp, "is null")
		}
		if err := validateServer(sp, svc, srv); err != nil {
			return nil, err
		}
		if err := validateServerHealth(sp, svc, srv); err != nil {
			return nil, err
		}
		if srv.Health != nil && len(srv.Health.Views) == 0 {
			srv.Health.Views = nil
		}
		if srv.Key() != key {
			return nil, invalid(sp, "key does not match the server's address and port %s", srv.Key())
		}
	}
	if len(svc.Servers) == 0 {
		// An empty map and a missing one are the same state; keep one
		// form so snapshots compare byte for byte.
		svc.Servers = nil
	}
	if other, ok := s.svcByID[id]; ok {
		field := p + ".port"
		if id.FWMark != 0 {
			field = p + ".fwmark"
		}
		return nil, conflict(field, "%s is already service %q", id, other)
	}
	// A restored snapshot's QuorumLost is the history the hysteresis
	// needs; a new service has none and starts from "not lost".
	svc.QuorumLost = nextQuorumLost(svc, svc.QuorumLost)
	return func() {
		s.state.Services[svc.Name] = svc
		s.svcByID[id] = svc.Name
		if svc.VIP != "" {
			users := s.svcsByVIP[svc.VIP]
			if users == nil {
				users = map[string]struct{}{}
				s.svcsByVIP[svc.VIP] = users
			}
			users[svc.Name] = struct{}{}
		}
	}, nil
}

// checkServiceIdentity validates the fields that make up a service's
// kernel identity, derives its Family and returns the identity.
func (s *store) checkServiceIdentity(p string, svc *Service) (ServiceIdentity, error) {
	var none ServiceIdentity
	if svc.FWMark < 0 || svc.FWMark > MaxFWMark {
		return none, invalid(p+".fwmark", "%d is out of range: 1..%d (0: none)", svc.FWMark, int64(MaxFWMark))
	}
	if svc.FWMark == 0 {
		if svc.VIP == "" {
			return none, invalid(p+".vip", "required unless fwmark is set")
		}
		switch svc.Protocol {
		case TCP, UDP, SCTP:
		case "":
			return none, invalid(p+".protocol", "required: tcp, udp or sctp")
		default:
			return none, invalid(p+".protocol", "unknown protocol %q: tcp, udp or sctp", svc.Protocol)
		}
		if svc.Port < 1 || svc.Port > 65535 {
			return none, invalid(p+".port", "%d is out of range: 1..65535", svc.Port)
		}
	} else {
		if svc.Protocol != "" {
			return none, invalid(p+".protocol", "must be empty for a firewall-mark service: the mark selects the packets")
		}
		if svc.Port != 0 {
			return none, invalid(p+".port", "must be 0 for a firewall-mark service: the mark selects the packets")
		}
	}
	if svc.Family != "" && !validFamily(svc.Family) {
		return none, invalid(p+".family", "unknown family %q: inet or inet6", svc.Family)
	}
	var vipAddr netip.Addr
	if svc.VIP != "" {
		vip, ok := s.state.VIPs[svc.VIP]
		if !ok {
			return none, notFound(p+".vip", "VIP %q does not exist", svc.VIP)
		}
		vipAddr = vip.Prefix.Addr()
		fam := FamilyOf(vipAddr)
		if svc.Family != "" && svc.Family != fam {
			return none, invalid(p+".family", "%s does not match VIP %q, which is %s", svc.Family, svc.VIP, fam)
		}
		svc.Family = fam
	} else if svc.Family == "" {
		return none, invalid(p+".family", "required for a firewall-mark service without a VIP: inet or inet6")
	}
	return identityOf(svc, vipAddr), nil
}

func (s *store) service(name string) (*Service, error) {
	svc, ok := s.state.Services[name]
	if !ok {
		return nil, notFound("service.name", "service %q does not exist", name)
	}
	return svc, nil
}

func (s *store) updateService(c UpdateService) (func(), error) {
	old, err := s.service(c.Name)
	if err != nil {
		return nil, err
	}
	pt := c.Patch
	if pt == (ServicePatch{}) {
		return nil, invalid("patch", "nothing to change")
	}
	if pt.NoPersistence && pt.Persistence != nil {
		return nil, invalid("patch.no_persistence", "conflicts with persistence: give one or the other")
	}
	if pt.NoCheck && pt.Check != nil {
		return nil, invalid("patch.no_check", "conflicts with check: give one or the other")
	}
	if pt.NoSorry && pt.Sorry != nil {
		return nil, invalid("patch.no_sorry", "conflicts with sorry: give one or the other")
	}
	// A shallow copy: the real servers are untouched by a service patch
	// (a new default method applies to servers added later), so the new
	// service can share its Servers map with the one it replaces. The
	// one exception, a check change that drops health, copies the map
	// (recheckServers).
	svc := *old
	if pt.Scheduler != nil {
		svc.Scheduler = *pt.Scheduler
	}
	if pt.SchedFlags != nil {
		svc.SchedFlags = *pt.SchedFlags
	}
	if pt.Persistence != nil {
		per := *pt.Persistence
		svc.Persistence = &per
	}
	if pt.NoPersistence {
		svc.Persistence = nil
	}
	if pt.OnePacket != nil {
		svc.OnePacket = *pt.OnePacket
	}
	if pt.Method != nil {
		svc.Method = *pt.Method
	}
	if pt.Check != nil {
		svc.Check = pt.Check
	}
	if pt.NoCheck {
		svc.Check = nil
	}
	if pt.DownAction != nil {
		svc.DownAction = *pt.DownAction
	}
	if pt.Quorum != nil {
		svc.Quorum = *pt.Quorum
	}
	if pt.QuorumHysteresis != nil {
		svc.QuorumHysteresis = *pt.QuorumHysteresis
	}
	if pt.Sorry != nil {
		svc.Sorry = pt.Sorry
	}
	if pt.NoSorry {
		svc.Sorry = nil
	}
	if err := validateServiceSettings("service", &svc); err != nil {
		return nil, err
	}
	if err := validateServiceHealth("service", &svc); err != nil {
		return nil, err
	}
	if pt.Check != nil || pt.NoCheck {
		if err := s.recheckServers(&svc); err != nil {
			return nil, err
		}
	}
	svc.QuorumLost = nextQuorumLost(&svc, old.QuorumLost)
	return func() { s.state.Services[svc.Name] = &svc }, nil
}

// recheckServers validates svc's servers against its new default check
// and drops the health of servers the change leaves unchecked: a health
// record with no check behind it could never change again. svc is a
// shallow copy, so a server that changes is copied into a new map.
func (s *store) recheckServers(svc *Service) error {
	var copied bool
	for _, key := range slices.Sorted(maps.Keys(svc.Servers)) {
		srv := svc.Servers[key]
		if err := validateCheckTarget("service.check.port", svc, srv); err != nil {
			return err
		}
		if srv.Health == nil || EffectiveCheck(svc, srv) != nil {
			continue
		}
		if !copied {
			svc.Servers, copied = maps.Clone(svc.Servers), true
		}
		ns := *srv
		ns.Health = nil
		svc.Servers[key] = &ns
	}
	return nil
}

// refuseDerived refuses a request that sets what only Apply may: health
// comes from the directors' agreement, quorum from health.
func refuseDerived(p string, svc *Service) error {
	if svc.QuorumLost {
		return invalid(p+".quorum_lost", "is derived from the servers' health and cannot be set")
	}
	for _, key := range slices.Sorted(maps.Keys(svc.Servers)) {
		if srv := svc.Servers[key]; srv != nil && srv.Health != nil {
			return invalid(p+".servers["+key+"].health", "is set by health checks and cannot be set by a request")
		}
	}
	return nil
}

// setHealth validates the shape of every update, then returns the change
// that applies those whose server still exists and is still checked. A
// transition records index; an update that repeats the committed state
// refreshes the views only.
func (s *store) setHealth(c SetHealth, index uint64) (func(), error) {
	if len(c.Updates) == 0 {
		return nil, invalid("updates", "required: at least one update")
	}
	if len(c.Updates) > MaxHealthUpdates {
		return nil, invalid("updates", "%d updates; at most %d per command", len(c.Updates), MaxHealthUpdates)
	}
	seen := make(map[[2]string]int, len(c.Updates))
	for i := range c.Updates {
		u := &c.Updates[i]
		p := "updates[" + strconv.Itoa(i) + "]"
		if err := validateHealthUpdate(p, u); err != nil {
			return nil, err
		}
		k := [2]string{u.Service, u.Server}
		if j, dup := seen[k]; dup {
			return nil, invalid(p, "%s of service %q is already updates[%d]", u.Server, u.Service, j)
		}
		seen[k] = i
	}
	updates := make([]HealthUpdate, len(c.Updates))
	for i, u := range c.Updates {
		u.Views = maps.Clone(u.Views)
		if len(u.Views) == 0 {
			u.Views = nil
		}
		updates[i] = u
	}
	return func() {
		var changed []*Service
		for _, u := range updates {
			svc := s.state.Services[u.Service]
			if svc == nil {
				continue
			}
			srv := svc.Servers[u.Server]
			if srv == nil || EffectiveCheck(svc, srv) == nil {
				continue
			}
			h := &Health{State: u.State, Index: index, Views: u.Views}
			if srv.Health != nil && srv.Health.State == u.State {
				h.Index = srv.Health.Index
			}
			ns := *srv
			ns.Health = h
			svc.Servers[u.Server] = &ns
			changed = append(changed, svc)
		}
		for _, svc := range changed {
			svc.QuorumLost = nextQuorumLost(svc, svc.QuorumLost)
		}
	}, nil
}

func (s *store) deleteService(c DeleteService) (func(), error) {
	if _, err := s.service(c.Name); err != nil {
		return nil, err
	}
	return func() { s.removeService(c.Name) }, nil
}

// removeService deletes a service and its index entries.
func (s *store) removeService(name string) {
	svc := s.state.Services[name]
	var vipAddr netip.Addr
	if svc.VIP != "" {
		vipAddr = s.state.VIPs[svc.VIP].Prefix.Addr()
		if users := s.svcsByVIP[svc.VIP]; users != nil {
			delete(users, name)
			if len(users) == 0 {
				delete(s.svcsByVIP, svc.VIP)
			}
		}
	}
	delete(s.svcByID, identityOf(svc, vipAddr))
	delete(s.state.Services, name)
}

// serverKey looks up the server addr:port of a service; port is checked
// first because ServerKey would wrap an out-of-range one onto a valid
// port.
func serverKey(svc *Service, addr netip.Addr, port int) (string, error) {
	if port < 0 || port > 65535 {
		return "", invalid("server.port", "%d is out of range: 0..65535", port)
	}
	key := ServerKey(addr, port)
	if _, ok := svc.Servers[key]; !ok {
		return "", notFound("server", "%s does not exist in service %q", key, svc.Name)
	}
	return key, nil
}

func (s *store) addServer(c AddServer) (func(), error) {
	svc, err := s.service(c.Service)
	if err != nil {
		return nil, err
	}
	srv := c.Server
	if srv.Health != nil {
		return nil, invalid("server.health", "is set by health checks and cannot be set by a request")
	}
	if err := validateServer("server", svc, &srv); err != nil {
		return nil, err
	}
	if err := validateServerHealth("server", svc, &srv); err != nil {
		return nil, err
	}
	key := srv.Key()
	if _, ok := svc.Servers[key]; ok {
		return nil, conflict("server", "%s already exists in service %q", key, svc.Name)
	}
	return func() {
		if svc.Servers == nil {
			svc.Servers = map[string]*RealServer{}
		}
		svc.Servers[key] = &srv
		svc.QuorumLost = nextQuorumLost(svc, svc.QuorumLost)
	}, nil
}

func (s *store) updateServer(c UpdateServer) (func(), error) {
	svc, err := s.service(c.Service)
	if err != nil {
		return nil, err
	}
	key, err := serverKey(svc, c.Address, c.Port)
	if err != nil {
		return nil, err
	}
	pt := c.Patch
	if pt == (ServerPatch{}) {
		return nil, invalid("patch", "nothing to change")
	}
	if pt.NoCheck && pt.Check != nil {
		return nil, invalid("patch.no_check", "conflicts with check: give one or the other")
	}
	srv := *svc.Servers[key]
	if pt.Method != nil {
		srv.Method = *pt.Method
	}
	if pt.Tunnel != nil {
		srv.Tunnel = *pt.Tunnel
	}
	if pt.TunnelPort != nil {
		srv.TunnelPort = *pt.TunnelPort
	}
	if pt.TunnelChecksum != nil {
		srv.TunnelChecksum = *pt.TunnelChecksum
	}
	if pt.Weight != nil {
		srv.Weight = *pt.Weight
	}
	if pt.UpperThreshold != nil {
		srv.UpperThreshold = *pt.UpperThreshold
	}
	if pt.LowerThreshold != nil {
		srv.LowerThreshold = *pt.LowerThreshold
	}
	if pt.Admin != nil {
		srv.Admin = *pt.Admin
	}
	if pt.Check != nil {
		srv.Check = pt.Check
	}
	if pt.NoCheck {
		srv.Check = nil
	}
	if EffectiveCheck(svc, &srv) == nil {
		// Unchecked now: no health record could ever change again.
		srv.Health = nil
	}
	if err := validateServer("server", svc, &srv); err != nil {
		return nil, err
	}
	if err := validateServerHealth("server", svc, &srv); err != nil {
		return nil, err
	}
	// Replace rather than modify in place: a reader that broke Read's
	// contract and kept a pointer sees a consistent old server.
	return func() {
		svc.Servers[key] = &srv
		svc.QuorumLost = nextQuorumLost(svc, svc.QuorumLost)
	}, nil
}

func (s *store) deleteServer(c DeleteServer) (func(), error) {
	svc, err := s.service(c.Service)
	if err != nil {
		return nil, err
	}
	key, err := serverKey(svc, c.Address, c.Port)
	if err != nil {
		return nil, err
	}
	return func() {
		delete(svc.Servers, key)
		if len(svc.Servers) == 0 {
			svc.Servers = nil
		}
		svc.QuorumLost = nextQuorumLost(svc, svc.QuorumLost)
	}, nil
}
