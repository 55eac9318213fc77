/*
Copyright 2026 The DelAuto Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package v1alpha1

// PhoneNumber is a phone number in E.164 form, for example +14155550123.
// +kubebuilder:validation:MaxLength=16
// +kubebuilder:validation:XValidation:rule="self.matches('^[+][1-9][0-9]{6,14}$')",message="must be an E.164 phone number: '+', country code and number, 7 to 15 digits, no spaces or dashes (for example +14155550123)"
type PhoneNumber string

// TimeZone is an IANA time zone name such as Europe/Berlin, or UTC.
// +kubebuilder:validation:MaxLength=64
// +kubebuilder:validation:XValidation:rule="self.matches('^(UTC|[A-Za-z][A-Za-z_-]*(/[A-Za-z0-9_+-]+){1,2})$') && timestamp('2000-01-01T00:00:00Z').getHours(self) >= 0",message="must be an IANA time zone name such as Europe/Berlin, America/New_York or UTC"
type TimeZone string

// ClockTime is a time of day, HH:MM on a 24-hour clock.
// +kubebuilder:validation:MaxLength=8
// +kubebuilder:validation:XValidation:rule="self.matches('^([01][0-9]|2[0-3]):[0-5][0-9]$')",message="must be a time of day as HH:MM on a 24-hour clock, for example 09:00 or 20:30"
type ClockTime string
