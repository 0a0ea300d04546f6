"""Booking: concerts, dates and seats, holds, payments and their reconciliation."""
