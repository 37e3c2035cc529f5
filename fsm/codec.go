package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// envelope is the wire form of a log entry. V comes first so a reader can
// refuse a newer encoding before it tries to understand the rest.
type envelope struct {
	V       int             `json:"v"`
	Type    CommandType     `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

// Encode returns the Raft log entry for cmd: a versioned, typed envelope.
// cmd may be a command value or a pointer to one.
//
// Encode decodes what it produced before returning it: an entry that
// Decode refuses would make every director panic in Apply (some values,
// such as a netip.Prefix with an out-of-range length, marshal to text that
// does not parse back), so such a command is refused here, on the proposer.
func Encode(cmd Command) ([]byte, error) {
	c, err := normalize(cmd)
	if err != nil {
		return nil, err
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", c.Type(), err)
	}
	data, err := json.Marshal(envelope{V: CommandVersion, Type: c.Type(), Payload: payload})
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", c.Type(), err)
	}
	if _, err := Decode(data); err != nil {
		return nil, fmt.Errorf("encode %s: the entry would not decode: %w", c.Type(), err)
	}
	return data, nil
}

// Decode parses a log entry written by Encode. An entry with a newer
// version or an unknown type returns an error wrapping
// ErrUnsupportedCommand. So does a payload with a field this build does
// not know: a newer director's new field must never be silently dropped,
// or directors of different versions would apply the same entry
// differently. Commands are returned as values (AddVIP, not *AddVIP).
func Decode(data []byte) (Command, error) {
	var env envelope
	strictErr := strictUnmarshal(data, &env)
	if strictErr != nil {
		// Decode leniently to tell malformed JSON from an envelope
		// with a field this build does not know, and to read the
		// version, which explains the latter best.
		env = envelope{}
		if err := json.Unmarshal(data, &env); err != nil {
			return nil, fmt.Errorf("decode command envelope: %w", err)
		}
	}
	if env.V > CommandVersion {
		return nil, fmt.Errorf("command version %d is newer than this director understands (%d): upgrade this director: %w",
			env.V, CommandVersion, ErrUnsupportedCommand)
	}
	if env.V < 1 {
		return nil, fmt.Errorf("decode command: version %d is not valid (missing \"v\"?)", env.V)
	}
	if strictErr != nil {
		return nil, fmt.Errorf("decode command envelope: %v: written by a newer director? upgrade this director: %w",
			strictErr, ErrUnsupportedCommand)
	}
	if len(env.Payload) == 0 {
		return nil, fmt.Errorf("decode %s: missing payload", env.Type)
	}
	switch env.Type {
	case TypeAddVIP:
		return decodePayload[AddVIP](env)
	case TypeDeleteVIP:
		return decodePayload[DeleteVIP](env)
	case TypeAddService:
		return decodePayload[AddService](env)
	case TypeUpdateService:
		return decodePayload[UpdateService](env)
	case TypeDeleteService:
		return decodePayload[DeleteService](env)
	case TypeAddServer:
		return decodePayload[AddServer](env)
	case TypeUpdateServer:
		return decodePayload[UpdateServer](env)
	case TypeDeleteServer:
		return decodePayload[DeleteServer](env)
	case TypeReplaceState:
		return decodePayload[ReplaceState](env)
	case TypeCreateToken:
		return decodePayload[CreateToken](env)
	case TypeRevokeToken:
		return decodePayload[RevokeToken](env)
	case TypeInstallKey:
		return decodePayload[InstallKey](env)
	case TypeUseKey:
		return decodePayload[UseKey](env)
	case TypeRemoveKey:
		return decodePayload[RemoveKey](env)
	case TypeSetHealth:
		return decodePayload[SetHealth](env)
	}
	return nil, fmt.Errorf("command type %q is unknown to this director (command version %d): upgrade this director: %w",
		env.Type, CommandVersion, ErrUnsupportedCommand)
}

func decodePayload[C Command](env envelope) (Command, error) {
	var c C
	if err := strictUnmarshal(env.Payload, &c); err != nil {
		// Telling an unknown field from malformed JSON without matching
		// on the error text: if a lenient decode succeeds, the only
		// thing the strict one refused was a field it does not know.
		var lenient C
		if json.Unmarshal(env.Payload, &lenient) == nil {
			return nil, fmt.Errorf("decode %s payload: %v: written by a newer director? upgrade this director: %w",
				env.Type, err, ErrUnsupportedCommand)
		}
		return nil, fmt.Errorf("decode %s payload: %w", env.Type, err)
	}
	return c, nil
}

// strictUnmarshal is json.Unmarshal that refuses unknown fields.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

// normalize turns cmd into the value form Apply works on, so callers may
// pass either AddVIP{} or &AddVIP{}.
func normalize(cmd Command) (Command, error) {
	switch c := cmd.(type) {
	case AddVIP, DeleteVIP, AddService, UpdateService, DeleteService,
		AddServer, UpdateServer, DeleteServer, ReplaceState,
		CreateToken, RevokeToken,
		InstallKey, UseKey, RemoveKey, SetHealth:
		return c, nil
	case *AddVIP:
		return derefCommand(c)
	case *DeleteVIP:
		return derefCommand(c)
	case *AddService:
		return derefCommand(c)
	case *UpdateService:
		return derefCommand(c)
	case *DeleteService:
		return derefCommand(c)
	case *AddServer:
		return derefCommand(c)
	case *UpdateServer:
		return derefCommand(c)
	case *DeleteServer:
		return derefCommand(c)
	case *ReplaceState:
		return derefCommand(c)
	case *CreateToken:
		return derefCommand(c)
	case *RevokeToken:
		return derefCommand(c)
	case *InstallKey:
		return derefCommand(c)
	case *UseKey:
		return derefCommand(c)
	case *RemoveKey:
		return derefCommand(c)
	case *SetHealth:
		return derefCommand(c)
	case nil:
		return nil, &FieldError{Field: "command", Reason: "missing", Kind: ErrInvalid}
	}
	return nil, fmt.Errorf("%T is not an fsm command: %w", cmd, ErrUnsupportedCommand)
}

func derefCommand[C Command](c *C) (Command, error) {
	if c == nil {
		return nil, &FieldError{Field: "command", Reason: fmt.Sprintf("nil %T", c), Kind: ErrInvalid}
	}
	return *c, nil
}
