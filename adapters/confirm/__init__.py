"""Confirm (Brightly): highways enquiries over its SOAP connector web service (:mod:`.adapter`)."""
