package lvs

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/cloudflare/ipvs"
	"github.com/cloudflare/ipvs/netmask"

	"github.com/directorate/directorate/fsm"
)

// maxSchedulerName is the longest scheduler name the kernel stores
// (IP_VS_SCHEDNAME_MAXLEN, terminating NUL included).
const maxSchedulerName = 16 - 1

// Desired is the kernel table the replicated state asks for, with what the
// reconciler needs to tell Directorate's kernel services from foreign ones.
// It is not modified after it is built, so it may be shared between
// goroutines.
type Desired struct {
	// Index is the configuration index the table was built from.
	Index uint64
	// Services is the table to converge to.
	Services Table
	// Held are services the state holds but lvs could not express, with
	// the reason. The reconciler leaves them exactly as the kernel has
	// them.
	Held map[ServiceKey]error
	// VIPAddrs are the addresses of the state's VIPs, and FWMarks the
	// firewall marks its services use (with how many use each): kernel
	// services on them are Directorate's even when no desired service
	// matches (see the package documentation).
	VIPAddrs map[netip.Addr]struct{}
	FWMarks  map[uint32]int

	// byName maps each Directorate service with a known identity to it;
	// heldName names the owner of each held key. Patch needs both.
	byName   map[string]ServiceKey
	heldName map[ServiceKey]string
	// conflicts is set when two services had one identity; Patch then
	// rebuilds, because a patch could change which of them wins.
	conflicts bool
	// log and gen place the table in the lineage Patch derives from one
	// DesiredFromState; the reconciler uses them to diff only what
	// changed.
	log *changeLog
	gen uint64
	// dests counts the destinations of Services.
	dests int
}

// Count returns the number of desired services and destinations.
func (d *Desired) Count() (services, dests int) { return len(d.Services), d.dests }

// Claims reports whether the state makes the kernel service k
// Directorate's: k is desired or held, or sits on a VIP address or
// firewall mark of the state.
func (d *Desired) Claims(k ServiceKey) bool {
	if _, ok := d.Services[k]; ok {
		return true
	}
	if _, ok := d.Held[k]; ok {
		return true
	}
	if k.FWMark != 0 {
		return d.FWMarks[k.FWMark] > 0
	}
	_, ok := d.VIPAddrs[k.Addr]
	return ok
}

func newDesired(index uint64) *Desired {
	return &Desired{
		Index:    index,
		Services: make(Table),
		Held:     make(map[ServiceKey]error),
		VIPAddrs: make(map[netip.Addr]struct{}),
		FWMarks:  make(map[uint32]int),
		byName:   make(map[string]ServiceKey),
		heldName: make(map[ServiceKey]string),
		log:      &changeLog{},
	}
}

// DesiredFromState converts the replicated state into the desired kernel
// table. Admin state wins over health: real servers that are disabled are
// left out, drained ones get weight 0, and only then does health count. A
// server agreed down gets weight 0 (fsm.DownQuiesce) or is left out
// (fsm.DownRemove). While a service with a sorry server is below its
// quorum, every real server gets weight 0 and the sorry server is a
// destination of weight 1. See the package documentation.
//
// The state has been validated by fsm, so an error here means lvs cannot
// express something fsm accepted. Such an error never hides the rest:
// the returned Desired is always usable and holds every service that
// converted, and each failure (an *fsm.FieldError naming the field) is
// joined into the error. A service that failed is listed in Held when its
// identity is known, so the reconciler leaves its kernel entry alone; a
// real server that failed is left out of its service.
func DesiredFromState(st *fsm.State) (*Desired, error) {
	if st == nil {
		return newDesired(0), nil
	}
	d := newDesired(st.Index)
	for _, v := range st.VIPs {
		if v != nil && v.Prefix.IsValid() {
			d.VIPAddrs[v.Prefix.Addr()] = struct{}{}
		}
	}
	var errs []error
	for name, fs := range st.Services {
		errs = d.add(st, name, fs, errs)
	}
	// Map order is random; the report should not be.
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return d, errors.Join(errs...)
}

// Patch returns a copy of d in which the named services are converted
// again from st, which is d's state after changes to those services or
// their real servers. A name st no longer has is removed. The copy shares
// the unchanged services with d, and a Reconciler that last reconciled d
// (or an earlier table of its lineage) diffs only the named services.
//
// Patch is for service and real-server changes. After a change to VIPs,
// or a whole new state, build the table with DesiredFromState. The error
// covers the named services only; Patch falls back to a full rebuild
// when two services share one identity.
func (d *Desired) Patch(st *fsm.State, names ...string) (*Desired, error) {
	if d.conflicts || d.log == nil {
		return DesiredFromState(st)
	}
	nd := &Desired{
		Index:    st.Index,
		Services: maps.Clone(d.Services),
		Held:     maps.Clone(d.Held),
		VIPAddrs: d.VIPAddrs,
		FWMarks:  maps.Clone(d.FWMarks),
		byName:   maps.Clone(d.byName),
		heldName: maps.Clone(d.heldName),
		log:      d.log,
		dests:    d.dests,
	}
	var errs []error
	changed := make([]ServiceKey, 0, 2*len(names))
	for _, name := range names {
		if old, ok := nd.byName[name]; ok {
			nd.remove(name, old)
			changed = append(changed, old)
		}
		fs, ok := st.Services[name]
		if !ok {
			continue
		}
		errs = nd.add(st, name, fs, errs)
		if nd.conflicts {
			return DesiredFromState(st)
		}
		if k, ok := nd.byName[name]; ok {
			changed = append(changed, k)
		}
	}
	nd.gen = nd.log.add(d.gen, changed)
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return nd, errors.Join(errs...)
}

// add converts one service into d, appending its failures to errs.
func (d *Desired) add(st *fsm.State, name string, fs *fsm.Service, errs []error) []error {
	if fs == nil {
		return append(errs, fieldErr(svcField(name), "is null"))
	}
	key, err := serviceKey(st, fs)
	if err != nil {
		return append(errs, prefixField(svcField(name), err))
	}
	if other := d.owner(key); other != "" {
		// Two services with one kernel identity: the one with the
		// smaller name wins, whatever order the map yields them in.
		d.conflicts = true
		if other < name {
			return append(errs, conflictErr(name, other, key))
		}
		d.remove(other, key)
		errs = slices.DeleteFunc(errs, func(e error) bool { return ownedBy(e, other) })
		errs = append(errs, conflictErr(other, name, key))
	}
	d.byName[name] = key
	if key.FWMark != 0 {
		d.FWMarks[key.FWMark]++
	}
	svc, derrs, serr := convertService(name, fs, key)
	if serr != nil {
		serr = prefixField(svcField(name), serr)
		d.Held[key] = serr
		d.heldName[key] = name
		return append(errs, serr)
	}
	for _, e := range derrs {
		errs = append(errs, prefixField(svcField(name), e))
	}
	d.Services[key] = svc
	d.dests += len(svc.Dests)
	return errs
}

// owner names the service that has key, or returns "".
func (d *Desired) owner(key ServiceKey) string {
	if s := d.Services[key]; s != nil {
		return s.Name
	}
	return d.heldName[key]
}

// remove takes the service name, whose identity is key, out of d.
func (d *Desired) remove(name string, key ServiceKey) {
	if s := d.Services[key]; s != nil && s.Name == name {
		delete(d.Services, key)
		d.dests -= len(s.Dests)
	}
	if d.heldName[key] == name {
		delete(d.Held, key)
		delete(d.heldName, key)
	}
	if key.FWMark != 0 {
		if d.FWMarks[key.FWMark]--; d.FWMarks[key.FWMark] <= 0 {
			delete(d.FWMarks, key.FWMark)
		}
	}
	delete(d.byName, name)
}

// changeLog records, for a lineage of tables derived by Patch from one
// DesiredFromState, which generation each came from and which service
// keys it changed. Generation 0 is the root.
type changeLog struct {
	mu   sync.Mutex
	last uint64 // the newest generation handed out
	gens map[uint64]genEntry
	// order lists recorded generations oldest first, for eviction.
	order []uint64
}

type genEntry struct {
	parent uint64
	keys   []ServiceKey
}

// maxGenerations bounds a log nobody trims (a lineage no reconciler
// follows); a reader that needs an evicted generation diffs the whole
// table.
const maxGenerations = 4096

// add records a generation derived from parent that changed keys, and
// returns it.
func (l *changeLog) add(parent uint64, keys []ServiceKey) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gens == nil {
		l.gens = make(map[uint64]genEntry)
	}
	l.last++
	l.gens[l.last] = genEntry{parent: parent, keys: keys}
	l.order = append(l.order, l.last)
	for len(l.order) > maxGenerations {
		delete(l.gens, l.order[0])
		l.order = l.order[1:]
	}
	return l.last
}

// since returns the keys changed on the way from generation from to its
// descendant to, or false when to does not descend from from or part of
// the way is no longer recorded. Following parents, rather than taking
// every generation in between, keeps a sibling branch's changes from
// being mistaken for this one's.
func (l *changeLog) since(from, to uint64) ([]ServiceKey, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := []ServiceKey{}
	for g := to; g != from; {
		e, ok := l.gens[g]
		if !ok || e.parent >= g {
			return nil, false
		}
		keys = append(keys, e.keys...)
		g = e.parent
		if g < from {
			return nil, false
		}
	}
	return keys, true
}

// trim forgets generations up to gen: a reconciler that has reached gen
// only ever asks about later ones.
func (l *changeLog) trim(gen uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := 0
	for i < len(l.order) && l.order[i] <= gen {
		delete(l.gens, l.order[i])
		i++
	}
	l.order = l.order[i:]
}

func svcField(name string) string { return "services[" + name + "]" }

func conflictErr(loser, winner string, key ServiceKey) error {
	return &fsm.FieldError{
		Field:  svcField(loser),
		Reason: fmt.Sprintf("is the same kernel service (%s) as service %q", key, winner),
		Kind:   fsm.ErrConflict,
	}
}

// ownedBy reports whether err is about the service name.
func ownedBy(err error, name string) bool {
	var fe *fsm.FieldError
	return errors.As(err, &fe) && strings.HasPrefix(fe.Field, svcField(name)+".")
}

// fieldErr reports a bad field. The conversion functions name fields
// relative to what they convert (".weight") and their callers prefix the
// path with prefixField, so the paths are only built on failure: the
// conversion runs over the whole state on every commit.
func fieldErr(field, reason string) error {
	return &fsm.FieldError{Field: field, Reason: reason, Kind: fsm.ErrInvalid}
}

// prefixField prepends prefix to the field of a *fsm.FieldError.
func prefixField(prefix string, err error) error {
	var fe *fsm.FieldError
	if errors.As(err, &fe) {
		fe.Field = prefix + fe.Field
		return fe
	}
	return fmt.Errorf("%s: %w", prefix, err)
}

// ServiceKeyOf returns the kernel identity of fs, a service of st: what
// Reconciler.ReadService takes. The error names the field that has no
// kernel meaning, which a state fsm validated never has.
func ServiceKeyOf(st *fsm.State, fs *fsm.Service) (ServiceKey, error) {
	key, err := serviceKey(st, fs)
	if err != nil {
		return ServiceKey{}, prefixField(svcField(fs.Name), err)
	}
	return key, nil
}

// serviceKey works out a service's kernel identity.
func serviceKey(st *fsm.State, fs *fsm.Service) (ServiceKey, error) {
	var vip *fsm.VIP
	if fs.VIP != "" {
		vip = st.VIPs[fs.VIP]
		if vip == nil || !vip.Prefix.IsValid() {
			return ServiceKey{}, &fsm.FieldError{Field: ".vip", Reason: fmt.Sprintf("VIP %q does not exist", fs.VIP), Kind: fsm.ErrNotFound}
		}
	}
	if fs.FWMark != 0 {
		if fs.FWMark < 0 || fs.FWMark > math.MaxUint32 {
			return ServiceKey{}, fieldErr(".fwmark", fmt.Sprintf("%d is outside 1..%d", fs.FWMark, uint32(math.MaxUint32)))
		}
		fam, err := kernelFamily(fs.Family)
		switch {
		case vip != nil && fs.Family == "":
			fam = afOf(vip.Prefix.Addr())
		case err != nil:
			return ServiceKey{}, fieldErr(".family", err.Error())
		case vip != nil && fam != afOf(vip.Prefix.Addr()):
			return ServiceKey{}, fieldErr(".family", fmt.Sprintf("%s does not match the family of VIP %q", fs.Family, fs.VIP))
		}
		return ServiceKey{Family: fam, FWMark: uint32(fs.FWMark)}, nil
	}
	if vip == nil {
		return ServiceKey{}, fieldErr(".vip", "required for a service without a firewall mark")
	}
	proto, err := kernelProtocol(fs.Protocol)
	if err != nil {
		return ServiceKey{}, fieldErr(".protocol", err.Error())
	}
	if fs.Port < 0 || fs.Port > math.MaxUint16 {
		return ServiceKey{}, fieldErr(".port", fmt.Sprintf("%d is outside 0..65535", fs.Port))
	}
	addr := vip.Prefix.Addr()
	return ServiceKey{Family: afOf(addr), Protocol: proto, Addr: addr, Port: uint16(fs.Port)}, nil
}

// convertService builds the kernel service. A failure of the service
// itself is serr; failures of single real servers are derrs, and those
// servers are left out.
func convertService(name string, fs *fsm.Service, key ServiceKey) (svc *Service, derrs []error, serr error) {
	s := &Service{
		Name: name,
		Service: ipvs.Service{
			Family:    key.Family,
			Protocol:  key.Protocol,
			Address:   key.Addr,
			Port:      key.Port,
			FWMark:    key.FWMark,
			Scheduler: string(fs.Scheduler),
			Netmask:   fullMask(key.Family),
		},
	}
	if fs.Scheduler == "" || len(fs.Scheduler) > maxSchedulerName {
		return nil, nil, fieldErr(".scheduler", fmt.Sprintf("%q is not a scheduler name (1 to %d characters)", fs.Scheduler, maxSchedulerName))
	}
	flags, err := schedFlags(fs.Scheduler, fs.SchedFlags)
	if err != nil {
		return nil, nil, fieldErr(".sched_flags", err.Error())
	}
	s.Flags = flags
	if fs.OnePacket {
		s.Flags |= ipvs.ServiceOnePacket
	}
	if p := fs.Persistence; p != nil {
		if p.Timeout <= 0 || int64(p.Timeout) > math.MaxUint32 {
			return nil, nil, fieldErr(".persistence.timeout", fmt.Sprintf("%d is not a positive number of seconds", p.Timeout))
		}
		mask, err := persistenceMask(key.Family, p.PrefixLen)
		if err != nil {
			return nil, nil, fieldErr(".persistence.prefix_len", err.Error())
		}
		s.Flags |= ipvs.ServicePersistent
		s.Timeout = uint32(p.Timeout)
		s.Netmask = mask
	} else if key.FWMark == 0 && key.Port == 0 {
		return nil, nil, fieldErr(".port", "0 (every port) needs persistence, as ipvsadm requires")
	}

	// Only with a sorry server does a lost quorum change the table:
	// without one, the servers still up are better than nothing, and
	// the quorum hooks are the whole reaction.
	sorry := fs.Sorry != nil && !fs.QuorumUp() && fs.EffectiveQuorum() > 0
	remove := fs.EffectiveDownAction() == fsm.DownRemove
	s.Dests = make([]Destination, 0, len(fs.Servers)+1)
	for skey, rs := range fs.Servers {
		if rs == nil {
			derrs = append(derrs, fieldErr(".servers["+skey+"]", "is null"))
			continue
		}
		// A drained server keeps its destination even when down: the
		// operator asked for its connections to finish.
		if rs.Admin == fsm.Disabled || remove && !rs.Healthy() && rs.Admin != fsm.Drained {
			continue
		}
		d, err := convertServer(fs, key, rs)
		if err != nil {
			derrs = append(derrs, prefixField(".servers["+skey+"]", err))
			continue
		}
		if sorry || !rs.Healthy() {
			// Weight 0 rather than removal: established connections
			// finish, as with a drained server.
			d.Weight = 0
		}
		s.Dests = append(s.Dests, d)
	}
	if sorry {
		rs := &fsm.RealServer{Address: fs.Sorry.Address, Port: fs.Sorry.Port, Method: fs.Sorry.Method, Weight: 1, Admin: fsm.Enabled}
		d, err := convertServer(fs, key, rs)
		if err != nil {
			derrs = append(derrs, prefixField(".sorry", err))
		} else {
			s.Dests = append(s.Dests, d)
		}
	}
	s.SortDests()
	// Two map keys may spell one address (say, an IPv4-mapped form);
	// the kernel would refuse the second, so report it here instead.
	for i := 1; i < len(s.Dests); i++ {
		if s.Dests[i].Key() == s.Dests[i-1].Key() {
			derrs = append(derrs, &fsm.FieldError{Field: ".servers[" + s.Dests[i].Key().String() + "]", Reason: "appears twice", Kind: fsm.ErrConflict})
			s.Dests = slices.Delete(s.Dests, i, i+1)
			i--
		}
	}
	return s, derrs, nil
}

func convertServer(fs *fsm.Service, key ServiceKey, rs *fsm.RealServer) (Destination, error) {
	if !rs.Address.IsValid() {
		return Destination{}, fieldErr(".address", "is not an IP address")
	}
	if rs.Port < 0 || rs.Port > math.MaxUint16 {
		return Destination{}, fieldErr(".port", fmt.Sprintf("%d is outside 0..65535", rs.Port))
	}
	if rs.Weight < 0 || rs.Weight > fsm.MaxWeight {
		return Destination{}, fieldErr(".weight", fmt.Sprintf("%d is outside 0..%d", rs.Weight, fsm.MaxWeight))
	}
	if rs.UpperThreshold < 0 || int64(rs.UpperThreshold) > math.MaxInt32 {
		return Destination{}, fieldErr(".upper_threshold", fmt.Sprintf("%d is negative or too large", rs.UpperThreshold))
	}
	if rs.LowerThreshold < 0 || rs.LowerThreshold > rs.UpperThreshold {
		return Destination{}, fieldErr(".lower_threshold", fmt.Sprintf("%d is negative or above upper_threshold %d; the kernel refuses that", rs.LowerThreshold, rs.UpperThreshold))
	}
	method := rs.Method
	if method == "" {
		method = fs.Method
	}
	d := Destination{Destination: ipvs.Destination{
		Address:        rs.Address,
		Port:           uint16(rs.Port),
		Family:         afOf(rs.Address),
		Weight:         uint32(rs.Weight),
		UpperThreshold: uint32(rs.UpperThreshold),
		LowerThreshold: uint32(rs.LowerThreshold),
	}}
	switch rs.Admin {
	case fsm.Enabled, "":
	case fsm.Drained:
		d.Weight = 0
	default:
		return Destination{}, fieldErr(".admin", fmt.Sprintf("%q is not enabled, drained or disabled", rs.Admin))
	}
	switch method {
	case fsm.NAT:
		d.FwdMethod = ipvs.Masquerade
	case fsm.DR:
		d.FwdMethod = ipvs.DirectRoute
	case fsm.TUN:
		d.FwdMethod = ipvs.Tunnel
	default:
		return Destination{}, fieldErr(".method", fmt.Sprintf("%q is not nat, dr or tun (and the service has no default)", method))
	}
	if d.Family != key.Family && d.FwdMethod != ipvs.Tunnel {
		return Destination{}, fieldErr(".address", "a real server of the other address family needs the tun method")
	}
	if d.FwdMethod == ipvs.Tunnel {
		if err := tunnel(rs, &d.Destination); err != nil {
			return Destination{}, err
		}
	}
	return d, nil
}

func tunnel(rs *fsm.RealServer, d *ipvs.Destination) error {
	switch rs.Tunnel {
	case fsm.TunnelIPIP, "":
		d.TunnelType = ipvs.IPIP
	case fsm.TunnelGUE:
		d.TunnelType = ipvs.GUE
	case fsm.TunnelGRE:
		d.TunnelType = ipvs.GRE
	default:
		return fieldErr(".tunnel", fmt.Sprintf("%q is not ipip, gue or gre", rs.Tunnel))
	}
	if rs.TunnelPort < 0 || rs.TunnelPort > math.MaxUint16 {
		return fieldErr(".tunnel_port", fmt.Sprintf("%d is outside 0..65535", rs.TunnelPort))
	}
	if d.TunnelType == ipvs.GUE && rs.TunnelPort == 0 {
		return fieldErr(".tunnel_port", "required for a gue tunnel")
	}
	if d.TunnelType == ipvs.GUE {
		d.TunnelPort = uint16(rs.TunnelPort)
	}
	switch rs.TunnelChecksum {
	case fsm.ChecksumNone, "":
		d.TunnelFlags = ipvs.TunnelEncapNoChecksum
	case fsm.ChecksumOn:
		d.TunnelFlags = ipvs.TunnelEncapChecksum
	case fsm.ChecksumRemote:
		if d.TunnelType != ipvs.GUE {
			return fieldErr(".tunnel_checksum", "remcsum needs a gue tunnel")
		}
		d.TunnelFlags = ipvs.TunnelEncapRemoteChecksum
	default:
		return fieldErr(".tunnel_checksum", fmt.Sprintf("%q is not nocsum, csum or remcsum", rs.TunnelChecksum))
	}
	if d.TunnelType == ipvs.IPIP && d.TunnelFlags != ipvs.TunnelEncapNoChecksum {
		return fieldErr(".tunnel_checksum", "an ipip tunnel has no checksum option")
	}
	return nil
}

// schedFlags maps the sh and mh options onto the kernel's scheduler flag
// bits. The bits are shared (IP_VS_SVC_F_SCHED_SH_FALLBACK and
// IP_VS_SVC_F_SCHED_MH_FALLBACK are both IP_VS_SVC_F_SCHED1), so an
// option of the other scheduler would silently mean something else: it
// is refused.
func schedFlags(sched fsm.Scheduler, sf fsm.SchedFlags) (ipvs.Flags, error) {
	var f ipvs.Flags
	if sf.SHFallback || sf.SHPort {
		if sched != "sh" {
			return 0, fmt.Errorf("sh_fallback and sh_port need the sh scheduler, not %q", sched)
		}
		if sf.SHFallback {
			f |= ipvs.ServiceSchedulerOpt1
		}
		if sf.SHPort {
			f |= ipvs.ServiceSchedulerOpt2
		}
	}
	if sf.MHFallback || sf.MHPort {
		if sched != "mh" {
			return 0, fmt.Errorf("mh_fallback and mh_port need the mh scheduler, not %q", sched)
		}
		if sf.MHFallback {
			f |= ipvs.ServiceSchedulerOpt1
		}
		if sf.MHPort {
			f |= ipvs.ServiceSchedulerOpt2
		}
	}
	return f, nil
}

// persistenceMask returns the netmask that groups persistent clients: a
// dotted mask for IPv4, a prefix length for IPv6 (what the kernel takes
// for each family).
func persistenceMask(fam ipvs.AddressFamily, prefixLen int) (netmask.Mask, error) {
	bits := 32
	if fam == ipvs.INET6 {
		bits = 128
	}
	if prefixLen == 0 {
		prefixLen = bits
	}
	if prefixLen < 1 || prefixLen > bits {
		return netmask.Mask{}, fmt.Errorf("%d is outside 1..%d", prefixLen, bits)
	}
	return netmask.MaskFrom(prefixLen, bits), nil
}

func kernelProtocol(p fsm.Protocol) (ipvs.Protocol, error) {
	switch p {
	case fsm.TCP:
		return ipvs.TCP, nil
	case fsm.UDP:
		return ipvs.UDP, nil
	case fsm.SCTP:
		return ipvs.SCTP, nil
	}
	return 0, fmt.Errorf("%q is not tcp, udp or sctp", p)
}

func kernelFamily(f fsm.Family) (ipvs.AddressFamily, error) {
	switch f {
	case fsm.IPv4:
		return ipvs.INET, nil
	case fsm.IPv6:
		return ipvs.INET6, nil
	}
	return 0, fmt.Errorf("%q is not inet or inet6 (a firewall-mark service without a VIP needs it)", f)
}

// afOf returns the kernel family of addr; an IPv4-mapped IPv6 address is
// IPv6, as fsm.FamilyOf and the kernel treat it.
func afOf(addr netip.Addr) ipvs.AddressFamily {
	if addr.Is4() {
		return ipvs.INET
	}
	return ipvs.INET6
}
