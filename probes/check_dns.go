package probes

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// DNSChecker is the checker of CheckDNS: one query over UDP to the
// target, which must answer NOERROR with at least one record of the type
// asked, one of whose data matches DNSExpect when that is set.
type DNSChecker struct {
	mu      sync.Mutex
	regexps map[string]*regexp.Regexp
}

// NewDNSChecker returns the real DNS checker.
func NewDNSChecker() *DNSChecker {
	return &DNSChecker{regexps: make(map[string]*regexp.Regexp)}
}

// Check implements Checker.
func (c *DNSChecker) Check(ctx context.Context, spec CheckSpec) error {
	if err := c.check(ctx, spec); err != nil {
		return fmt.Errorf("dns %s %s %s: %w", spec.Target, cmp.Or(spec.DNSType, DefaultDNSType), spec.DNSName, err)
	}
	return nil
}

func (c *DNSChecker) check(ctx context.Context, spec CheckSpec) error {
	qtype, ok := dns.StringToType[strings.ToUpper(cmp.Or(spec.DNSType, DefaultDNSType))]
	if !ok {
		return fmt.Errorf("dns_type: unknown record type %q", spec.DNSType)
	}
	var expect *regexp.Regexp
	if spec.DNSExpect != "" {
		var err error
		if expect, err = c.regexp(spec.DNSExpect); err != nil {
			return fmt.Errorf("dns_expect: %w", err)
		}
	}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(spec.DNSName), qtype)
	// The client's own timeouts stay at their defaults: the context's
	// deadline, the check's timeout, is the one that matters.
	client := &dns.Client{Net: "udp"}
	resp, _, err := client.ExchangeContext(ctx, q, spec.Target.String())
	if err != nil {
		return fmt.Errorf("exchange: %w", err)
	}
	if resp.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("answer code %s", dns.RcodeToString[resp.Rcode])
	}
	var data []string
	for _, rr := range resp.Answer {
		if rr.Header().Rrtype != qtype {
			continue // a CNAME on the way to the answer, say
		}
		// The record's data is its presentation form without the header:
		// "192.0.2.1" for an A record, "10 mx.example." for an MX.
		d := strings.TrimSpace(strings.TrimPrefix(rr.String(), rr.Header().String()))
		if expect == nil || expect.MatchString(d) {
			return nil
		}
		data = append(data, d)
	}
	if len(data) == 0 {
		return errors.New("no answer of the type asked")
	}
	return fmt.Errorf("no answer matches %q (got %s)", spec.DNSExpect, strings.Join(data, ", "))
}

func (c *DNSChecker) regexp(expr string) (*regexp.Regexp, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if re, ok := c.regexps[expr]; ok {
		return re, nil
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, err
	}
	c.regexps[expr] = re
	return re, nil
}
