package media

import "strconv"

// ParseDigits parses a non-negative decimal made of ASCII digits only
// (strconv would take a sign).
func ParseDigits(s string) (int64, error) {
	if !IsDigits(s, 19) {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseInt(s, 10, 64)
}

// IsDigits reports whether s is 1 to max ASCII digits: the shape of Meta's
// media and phone number ids.
func IsDigits(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
