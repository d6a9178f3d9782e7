"""The admins' review of approval requests (issue 18): what needs both apps, so it lives in authz."""
