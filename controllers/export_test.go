package controllers

// SetBeforeReplan makes r call f with the attempt's id just before it
// cancels a queued attempt to re-plan it: where a worker's claim can land
// between the operator's read of the attempt and its cancel.
func SetBeforeReplan(r *DeliveryReconciler, f func(attemptID string)) { r.beforeReplan = f }
