package fsm

import "maps"

// NewState returns an empty state with its maps allocated.
func NewState() *State {
	return &State{VIPs: map[string]*VIP{}, Services: map[string]*Service{}}
}

// Clone returns a deep copy of s: nothing in the copy is shared with s.
// Nil entries of s's maps stay nil.
func (s *State) Clone() *State {
	c := &State{Index: s.Index, VIPs: maps.Clone(s.VIPs), Services: maps.Clone(s.Services), Tokens: cloneTokens(s.Tokens), Keyring: s.Keyring.Clone()}
	if c.VIPs == nil {
		c.VIPs = map[string]*VIP{}
	}
	if c.Services == nil {
		c.Services = map[string]*Service{}
	}
	// One allocation for all VIPs rather than one each: a clone of a
	// large site is mostly allocation.
	vips := make([]VIP, 0, len(s.VIPs))
	for name, v := range c.VIPs {
		if v == nil {
			continue
		}
		vips = append(vips, *v)
		c.VIPs[name] = &vips[len(vips)-1]
	}
	for name, svc := range c.Services {
		if svc != nil {
			c.Services[name] = svc.Clone()
		}
	}
	return c
}

// Clone returns a deep copy of svc, its real servers included.
func (svc *Service) Clone() *Service {
	c := *svc
	if svc.Persistence != nil {
		p := *svc.Persistence
		c.Persistence = &p
	}
	c.Check = svc.Check.clone()
	if svc.Sorry != nil {
		sorry := *svc.Sorry
		c.Sorry = &sorry
	}
	if svc.Servers != nil {
		// maps.Clone copies the table without rehashing; re-pointing
		// the existing keys at the copies then allocates nothing.
		c.Servers = maps.Clone(svc.Servers)
		servers := make([]RealServer, 0, len(svc.Servers))
		for key, srv := range c.Servers {
			if srv == nil {
				continue
			}
			servers = append(servers, *srv)
			cs := &servers[len(servers)-1]
			cs.Check = srv.Check.clone()
			cs.Health = srv.Health.clone()
			c.Servers[key] = cs
		}
	}
	return &c
}

// clone copies cc; nil stays nil.
func (cc *CheckConfig) clone() *CheckConfig {
	if cc == nil {
		return nil
	}
	c := *cc
	return &c
}

// clone copies h, its views included; nil stays nil.
func (h *Health) clone() *Health {
	if h == nil {
		return nil
	}
	c := *h
	c.Views = maps.Clone(h.Views)
	return &c
}
