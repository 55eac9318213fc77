// Package defaults fills in the options a caller left unset: what every
// constructor of the workers does first with its options.
package defaults

// Positive sets *v to def when *v is zero or negative (unset, or no
// meaningful setting).
func Positive[T ~int | ~int32 | ~int64 | ~float64](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Zero sets *v to def when *v is its type's zero value (an empty string, a
// nil pointer).
func Zero[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}
